"""The story grammar: determinism, QA spans, entity consistency, Spanish translations, minimal pairs."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from speechrl.corpus import grammar
from speechrl.corpus.grammar import benchmark_pairs, lexicon
from speechrl.corpus.grammar import stories as story_module  # `stories` is a fixture here
from speechrl.corpus.grammar import (
    BLIMP_PHENOMENA,
    blimp_pairs,
    english_content_words,
    generate_stories,
    story_cloze_pairs,
    vocabulary,
    wuggy_pairs,
)
from speechrl.text import normalize

ENGLISH_FUNCTION_WORDS = {"the", "and", "with", "she", "he", "they", "was", "were", "to", "of"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-záéíóúñü]+", text.lower())


@pytest.fixture(scope="module")
def stories() -> list[grammar.Story]:
    return generate_stories(300, seed=0)


def test_same_seed_same_stories_and_ids() -> None:
    a, b = generate_stories(40, seed=7), generate_stories(40, seed=7)
    assert a == b
    assert [s.id for s in a[:3]] == ["s0001", "s0002", "s0003"]
    assert generate_stories(10, seed=7) == a[:10]  # a prefix does not depend on n


def test_different_seed_different_stories() -> None:
    a, b = generate_stories(40, seed=7), generate_stories(40, seed=8)
    assert [s.text for s in a] != [s.text for s in b]


def test_global_random_state_is_untouched() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_stories(20, seed=1)
    blimp_pairs(20, seed=1)
    wuggy_pairs(20, seed=1)
    assert random.random() == expected


def test_story_shape_and_sentence_lengths(stories: list[grammar.Story]) -> None:
    assert len({s.text for s in stories}) == len(stories)
    for story in stories:
        assert 4 <= len(story.sentences) <= 6
        assert story.sentences[0].role == "opening" and story.sentences[-1].role == "ending"
        for sentence in story.sentences:
            assert 4 <= len(sentence.text.split()) <= 12, sentence.text
            assert sentence.text[0].isupper() and sentence.text.endswith(".")
            assert not re.search(r"\d", sentence.text)  # numbers are spelled out


def test_enough_distinct_sentences(stories: list[grammar.Story]) -> None:
    assert len({s.text for story in stories for s in story.sentences}) >= 500


def test_every_answer_is_a_span_of_its_own_sentence(stories: list[grammar.Story]) -> None:
    for story in stories:
        for sentence in story.sentences:
            assert sentence.questions, sentence.text
            for qa in sentence.questions:
                assert qa.question.endswith("?")
                assert 1 <= len(qa.answer.split()) <= 4, qa
                assert qa.answer.lower() in sentence.text.lower(), (qa, sentence.text)


def test_every_question_has_one_sentence_answers_in_several_wordings(stories: list[grammar.Story]) -> None:
    """Free-form answers (spoken QA as IBM's LibriSQA): 2–4 distinct sentences per question, the canonical
    first holding the span; every wording names what the question asks (its span), and no wording is
    the whole sentence for every question of a multi-question sentence."""
    for story in stories:
        for sentence in story.sentences:
            for qa in sentence.questions:
                assert 2 <= len(qa.answers) <= 4 and len(set(qa.answers)) == len(qa.answers), qa
                assert qa.answer.lower() in qa.answers[0].lower(), qa
                for answer in qa.answers:
                    assert answer[0].isupper() and answer.endswith(".") and len(answer.split()) >= 2, qa
            if len(sentence.questions) > 1:
                assert not all(sentence.text in qa.answers for qa in sentence.questions), sentence


def test_free_form_answers_golden() -> None:
    draft = story_module._opening(_cast(), random.Random(2))
    assert story_module._join(draft.en) == "Anna walked to the market in the morning."
    assert [(qa.question, qa.answer, qa.answers) for qa in draft.questions] == [
        ("Where did Anna walk?", "to the market",
         ["Anna walked to the market.", "She walked to the market.", "Anna went to the market."]),
        ("Who walked to the market?", "Anna", ["Anna walked to the market.", "It was Anna.", "Anna did."]),
        ("When did Anna walk to the market?", "in the morning",
         ["Anna walked to the market in the morning.", "In the morning, Anna walked to the market.",
          "She walked to the market in the morning."])]
    ending = story_module._ending(_cast(), story_module._EndingPlan("give", "that evening", False))
    assert [qa.answers for qa in ending.questions] == [
        ["Anna gave the apples to Tom.", "She gave the apples to Tom."],
        ["Anna gave the apples to Tom.", "Anna gave them to Tom.", "She gave the apples to Tom."],
        ["Anna gave the apples that evening.", "That evening, Anna gave the apples.",
         "She gave the apples that evening."]]


# sha-256 of every output the grammar had before the free-form answers (stories without ``answers``, fresh
# sentences, cloze / BLiMP / WUGGY pairs, the vocabulary), computed at 3b72068: the answers are derived
# from choices already made and draw nothing from a random stream, so all of it stays byte-identical
OUTPUTS_BEFORE_ANSWERS = {1: "a9800b9abab29a4adeb16511a1be35c6f82dde8c0edc8e1cae893fdfdb5c3af2",
                          7: "fc158d275c4588558475b467058c0ed9545f9500c5dba4f0f8b27a257f85a808"}


@pytest.mark.parametrize("seed", sorted(OUTPUTS_BEFORE_ANSWERS))
def test_the_grammars_earlier_outputs_are_byte_identical(seed: int) -> None:
    import dataclasses
    import hashlib
    import json

    from speechrl.corpus.grammar import fresh_sentences

    stories = generate_stories(50, seed)
    out: list = [{"id": s.id, "entities": s.entities,
                  "sentences": [{"text": x.text, "translation": x.translation, "keywords": x.keywords, "role": x.role,
                                 "questions": [[q.question, q.answer] for q in x.questions]} for x in s.sentences]}
                 for s in stories]
    out.append(fresh_sentences(20, seed, set()))
    out.append([dataclasses.astuple(p) for p in story_cloze_pairs(stories, seed)])
    out.append([dataclasses.astuple(p) for p in blimp_pairs(30, seed)])
    out.append([dataclasses.astuple(p) for p in wuggy_pairs(30, seed)])
    out.append(sorted(vocabulary()))
    digest = hashlib.sha256(json.dumps(out, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert digest == OUTPUTS_BEFORE_ANSWERS[seed]


def test_keywords_occur_in_their_sentence(stories: list[grammar.Story]) -> None:
    for story in stories:
        for sentence in story.sentences:
            for keyword in sentence.keywords:
                assert keyword in words(sentence.text) or keyword in sentence.text, (keyword, sentence.text)
        assert story.entities["name"] in story.sentences[0].keywords


def test_entities_are_consistent_within_a_story(stories: list[grammar.Story]) -> None:
    for story in stories:
        e = story.entities
        first, last = story.sentences[0].text, story.sentences[-1].text
        assert e["name"] in first.split() and e["name"] in last.replace(",", "").split()
        assert e["companion"] != e["name"]
        meet = next(s for s in story.sentences if s.role == "meet")
        assert e["companion"] in meet.text and e["relation"] in meet.text
        acquire = next(s for s in story.sentences if s.role == "acquire")
        noun = lexicon.THINGS[e["object"]].noun.en_form(e["number"] == "plural")
        assert f"{e['adjective']} {noun}." in acquire.text
        assert e["object"] in lexicon.PLACES[e["place"]].things
        # every pronoun refers to the protagonist, so it must match the protagonist's gender
        tokens = set(words(story.text))
        other = {"he", "him", "his"} if e["pronoun"] == "she" else {"she", "her", "hers"}
        assert not tokens & other, story.text
        assert not set(words(" ".join(s.translation for s in story.sentences))) & (
            {"él"} if e["pronoun"] == "she" else {"ella"}
        )


def test_translations_are_spanish(stories: list[grammar.Story]) -> None:
    content = english_content_words()
    assert {"apples", "market", "bought", "walked", "red"} <= content
    names = {n for group in lexicon.NAMES.values() for n in group}
    for story in stories:
        for sentence in story.sentences:
            es = sentence.translation
            assert es and es != sentence.text and es.endswith(".")
            tokens = set(words(es))
            assert not tokens & content, (sentence.text, es)
            assert not tokens & ENGLISH_FUNCTION_WORDS, (sentence.text, es)
            assert not re.search(r"\b(a|de) el\b", es)  # contracted to al / del
            assert set(sentence.text.replace(",", " ").replace(".", " ").split()) & names <= set(
                es.replace(",", " ").replace(".", " ").split()
            )


def _cast(**changes: str) -> story_module._Cast:
    base = story_module._Cast("Anna", "f", "Tom", "m", "friend", "market", "apple", "three", "red")
    return story_module._Cast(**{**base.__dict__, **changes})


@pytest.mark.parametrize(
    ("cast", "plan", "english", "spanish"),
    [
        (_cast(), story_module._EndingPlan("eat", "in the evening", True),
         "In the evening, Anna ate the red apples with Tom at home.",
         "Por la noche, Anna comió las manzanas rojas con Tom en casa."),
        (_cast(place="library", thing="map", quantity="a", adjective="old"),
         story_module._EndingPlan("give", "that evening", True),
         "That evening, Anna gave the old map to Tom.", "Esa noche, Anna le dio el mapa viejo a Tom."),
        (_cast(), story_module._EndingPlan("return", "the next day", False),
         "The next day, Anna went back to the market with Tom.",
         "Al día siguiente, Anna volvió al mercado con Tom."),
        (_cast(gender="m", name="Max", thing="egg", quantity="five", adjective="brown"),
         story_module._EndingPlan("cook", "later that day", True),
         "Later that day, Max cooked the brown eggs for Tom.",
         "Más tarde ese día, Max cocinó los huevos marrones para Tom."),
    ],
)
def test_ending_translation_golden(cast: story_module._Cast, plan: story_module._EndingPlan, english: str,
                                   spanish: str) -> None:
    sentence = story_module._finish(story_module._ending(cast, plan))
    assert (sentence.text, sentence.translation) == (english, spanish)


@pytest.mark.parametrize(
    ("cast", "english_end", "spanish_end"),
    [
        (_cast(), "she bought three red apples.", "ella compró tres manzanas rojas."),
        (_cast(gender="m", name="Max", place="library", thing="book", adjective="old"),
         "he borrowed three old books.", "él tomó prestados tres libros viejos."),
        (_cast(place="library", thing="map", quantity="a", adjective="old"),
         "she borrowed an old map.", "ella tomó prestado un mapa viejo."),
        (_cast(place="beach", thing="shell", quantity="ten", adjective="white"),
         "she found ten white shells.", "ella encontró diez conchas blancas."),
        (_cast(place="shop", thing="cup", quantity="a", adjective="blue"),
         "she bought a blue cup.", "ella compró una taza azul."),
    ],
)
def test_acquisition_agreement_golden(cast: story_module._Cast, english_end: str, spanish_end: str) -> None:
    sentence = story_module._finish(story_module._acquire(cast, random.Random(0)))
    assert sentence.text.lower().endswith(english_end)
    assert sentence.translation.lower().endswith(spanish_end)


def test_gustar_agrees_with_its_object() -> None:
    singular = story_module._finish(story_module._like(_cast(quantity="a"), random.Random(0)))
    plural = story_module._finish(story_module._like(_cast(), random.Random(0)))
    assert singular.translation == "A Tom le gustó mucho la manzana."
    assert plural.translation == "A Tom le gustaron mucho las manzanas."


def test_vocabulary_covers_everything_emitted(stories: list[grammar.Story]) -> None:
    vocab = vocabulary()
    assert 150 <= len(vocab) <= 300
    assert all(w == w.lower() and w.isalpha() for w in vocab)
    assert not vocab & {"two", "four", "eight", "one", "read", "sea", "by", "son", "sun", "flour"}
    texts = [s.text for story in stories for s in story.sentences]
    qas = [qa for story in stories for s in story.sentences for qa in s.questions]
    texts += [qa.question for qa in qas] + [qa.answer for qa in qas] + [a for qa in qas for a in qa.answers]
    texts += [p.wrong for p in story_cloze_pairs(stories, seed=0)]
    texts += [t for p in blimp_pairs(300, seed=0) for t in (p.good, p.bad)]
    emitted = {w for t in texts for w in normalize(t).split()}
    assert emitted <= vocab, emitted - vocab
    assert len(emitted) >= 0.95 * len(vocab)


def test_vocabulary_is_in_the_cmu_dictionary() -> None:
    cmu = benchmark_pairs._known_english_words()
    if not cmu:
        pytest.skip("pocketsphinx's CMU dictionary is not installed")
    assert vocabulary() <= cmu, vocabulary() - cmu


def test_story_cloze_pairs(stories: list[grammar.Story]) -> None:
    pairs = story_cloze_pairs(stories, seed=3)
    assert pairs == story_cloze_pairs(stories, seed=3)
    by_id = {s.id: s for s in stories}
    assert Counter(p.kind for p in pairs) == {"ssc": len(stories), "tsc": len(stories)}
    assert {p.perturbation for p in pairs if p.kind == "ssc"} == {"name", "companion", "object", "place"}
    for p in pairs:
        story = by_id[p.story_id]
        assert p.context == tuple(s.text for s in story.sentences[:-1])
        assert p.correct == story.sentences[-1].text
        assert p.wrong != p.correct
        if p.kind == "tsc":
            assert p.wrong_from != p.story_id
            assert p.wrong == by_id[p.wrong_from].sentences[-1].text
        else:
            # same production, one entity swapped: fluent words, same length, a contradiction
            assert len(p.wrong.split()) == len(p.correct.split())
            assert set(words(p.wrong)) <= vocabulary()
            if p.perturbation in ("name", "companion"):
                names = {story.entities["name"], story.entities["companion"]}
                assert set(p.wrong.replace(",", " ").replace(".", " ").split()) & (
                    {n for g in lexicon.NAMES.values() for n in g} - names
                )


def test_blimp_pairs() -> None:
    pairs = blimp_pairs(120, seed=5)
    assert pairs == blimp_pairs(120, seed=5)
    assert len(pairs) == 120 and len({p.bad for p in pairs}) == 120
    assert Counter(p.phenomenon for p in pairs) == {ph: 20 for ph in BLIMP_PHENOMENA}
    for p in pairs:
        good, bad = words(p.good), words(p.bad)
        assert good != bad and len(good) == len(bad)  # a minimal pair
        changed = [i for i, (g, b) in enumerate(zip(good, bad)) if g != b]
        assert len(changed) == (2 if p.phenomenon == "word_order" else 1), p
        if p.phenomenon == "word_order":
            assert sorted(good) == sorted(bad)
    examples = {p.phenomenon: p for p in pairs}
    assert re.search(r"\b(they was|(he|she|[A-Z][a-z]+|it|weather|\w+) were)\b",
                     examples["subject_verb_agreement"].bad)
    assert re.search(r"\b(her|him|them)\b", examples["pronoun_case"].bad.lower())


def test_blimp_pairs_beyond_one_phenomenon_capacity() -> None:
    pairs = blimp_pairs(1500, seed=0)
    assert len({p.bad for p in pairs}) == len(pairs) >= 1200


def test_wuggy_pairs() -> None:
    pairs = wuggy_pairs(300, seed=2)
    assert pairs == wuggy_pairs(300, seed=2)
    assert len(pairs) == 300 and len({p.nonword for p in pairs}) == 300
    vocab, cmu = vocabulary(), benchmark_pairs._known_english_words()
    for p in pairs:
        assert p.word in vocab and p.nonword not in vocab and p.nonword not in cmu
        assert p.nonword.isalpha() and p.nonword.islower()
        assert len(p.nonword) == len(p.word)
        assert 1 <= sum(a != b for a, b in zip(p.word, p.nonword)) <= 4
        assert re.search(r"[aeiouy]", p.nonword)  # keeps a vowel: still pronounceable


def test_wuggy_substitutions_keep_the_syllable_shape() -> None:
    units = benchmark_pairs._graphemes("market")
    assert units == ["m", "a", "r", "k", "e", "t"]
    assert set(benchmark_pairs._substitutes(units, 3)) == {"p", "t"}  # a voiceless stop stays one
    assert benchmark_pairs._substitutes(benchmark_pairs._graphemes("black"), 0) == ("g",)  # not "dlack"
    assert benchmark_pairs._substitutes(benchmark_pairs._graphemes("three"), 0) == ()  # digraph "th" is kept
    assert benchmark_pairs._substitutes(benchmark_pairs._graphemes("vase"), 3) == ()  # silent final e


def test_fresh_stories_tell_no_excluded_story_and_no_story_twice() -> None:
    from speechrl.corpus.grammar import fresh_stories

    held_out = generate_stories(30, 0)
    exclude = {tuple(s.text for s in st.sentences[:-1]) for st in held_out}
    stories = fresh_stories(200, 0, exclude)
    contexts = [tuple(s.text for s in st.sentences[:-1]) for st in stories]
    assert len(stories) == 200 and len(set(contexts)) == 200 and not set(contexts) & exclude
    assert [st.id for st in stories[:2]] == ["l00001", "l00002"]
    assert all(len(st.sentences) >= 4 for st in stories)
    assert [st.sentences[0].text for st in fresh_stories(5, 0, exclude)] == [st.sentences[0].text for st in stories[:5]]
    assert fresh_stories(5, 1, set())[0].sentences != stories[0].sentences  # another seed, other stories
