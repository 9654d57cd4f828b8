"""speechrl.text: normalisation rules and WER/CER values computed by hand."""

import math

import pytest

from speechrl.text import (ErrorCounts, cer, char_errors, content_word_accuracy, is_english, normalize, normalize_for_scoring,
                           number_to_words, sentence_cer, sentence_wer, wer, word_errors)


@pytest.mark.parametrize("raw, expected", [
    ("Hello,   World!", "hello world"),
    ("  tabs\tand\nnewlines  ", "tabs and newlines"),
    ("Don’t stop — it's fine.", "don't stop it's fine"),       # curly apostrophe, em dash
    ("'quoted' the dogs' bones", "quoted the dogs bones"),      # edge apostrophes dropped
    ("ＦＵＬＬ width ﬁne", "full width fine"),                    # NFKC
    ("Café ÜBER", "café über"),                                 # accents kept, lowercased
    ("twenty-one", "twenty one"),
    ("21", "twenty one"),
    ("I have 3 cats and 0 dogs", "i have three cats and zero dogs"),
    ("100 and 101", "one hundred and 101"),                     # only 0..100 spelled out
    ("the 1st, 2nd, 3rd and 12th", "the first second third and twelfth"),
    ("20th 21st 100th", "twentieth twenty first one hundredth"),
    ("50% off", "fifty percent off"),
    ("3.5 kilos", "three point five kilos"),
    ("1,000 people", "1000 people"),
    ("at 7pm", "at seven pm"),
    ("mp3 covid19 007", "mp3 covid19 007"),                     # glued digits, leading zeros
    ("soft\u00adhyphen zero\u200bwidth", "softhyphen zero width"),
    ("?!...", ""),
    ("", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_is_idempotent_and_can_keep_digits():
    s = "He said: “Meet me at 3:30, room 12B!”"
    assert normalize(normalize(s)) == normalize(s) == "he said meet me at three thirty room 12b"
    assert normalize("3 cats", spell_numbers=False) == "3 cats"
    with pytest.raises(TypeError):
        normalize(None)


def test_number_to_words():
    assert [number_to_words(n) for n in (0, 13, 40, 42, 99, 100)] == [
        "zero", "thirteen", "forty", "forty two", "ninety nine", "one hundred"]
    with pytest.raises(ValueError):
        number_to_words(101)


def test_wer_hand_computed():
    # "a b c" vs "a x c": 1 substitution; "d e" vs "d e f": 1 insertion -> 2 / 5 words
    assert wer(["a b c", "d e"], ["a x c", "d e f"]) == pytest.approx(0.4)
    c = word_errors(["a b c", "d e"], ["a x c", "d e f"])
    assert c == ErrorCounts(substitutions=1, deletions=0, insertions=1, hits=4, ref_units=5)
    # corpus-level: 1 deletion / 5 words = 0.2, not the mean of sentence rates (1/4 + 0) / 2
    assert wer(["a b c d", "e"], ["a b c", "e"]) == pytest.approx(0.2)
    assert sentence_wer("the cat sat", "the cat sat") == 0.0
    assert sentence_wer("the cat sat", "") == 1.0                       # 3 deletions / 3
    assert sentence_wer("the cat", "a dog barked") == pytest.approx(1.5)  # 2 sub + 1 ins / 2


def test_content_word_accuracy_hand_computed():
    function = {"the", "to", "a", "on"}
    # content words: peter went beach saturday | sam sat; matched by the alignment: went, beach | sam sat
    refs = ["Peter went to the beach on Saturday.", "Sam sat", ""]
    hyps = ["David went to a beach on Thursday", "Sam sat down", "spurious words"]
    assert content_word_accuracy(refs, hyps, function) == pytest.approx(4 / 6)
    # order matters: the alignment (delete beach, keep house, insert beach) matches one of the two words
    assert content_word_accuracy(["beach house"], ["house beach"], set()) == pytest.approx(0.5)
    assert math.isnan(content_word_accuracy(["the a"], ["the a"], function))


def test_wer_uses_normalisation():
    assert sentence_wer("She bought 3 apples.", "she bought three Apples") == 0.0
    assert sentence_wer("She bought 3 apples.", "she bought three Apples", norm=False) > 0


def test_cer_hand_computed():
    # "abc" vs "abd": 1 substitution of 3 chars
    assert sentence_cer("abc", "abd") == pytest.approx(1 / 3)
    # spaces count: "ab c" (4 chars) vs "ab" -> 2 deletions; "d" vs "d" -> 0 -> 2 / 5
    assert cer(["ab c", "d"], ["ab", "d"]) == pytest.approx(0.4)
    c = char_errors(["ab c", "d"], ["ab", "d"])
    assert (c.deletions, c.ref_units, c.hits) == (2, 5, 3)
    assert sentence_cer("Hello!", "hello") == 0.0


def test_empty_reference_rule():
    # an empty reference contributes its hypothesis words as insertions and nothing to N
    assert sentence_wer("", "") == 0.0
    assert sentence_wer("", "oh yes") == 2.0
    assert sentence_wer("...", "?") == 0.0                                 # both normalise to ""
    assert wer(["", "a b"], ["x", "a b"]) == pytest.approx(0.5)           # 1 ins / 2 words
    assert wer(["", ""], ["x", "y z"]) == 3.0                              # no ref words: N := 1
    assert sentence_cer("", "ab") == 2.0
    assert cer(["", "abcd"], ["x", "abcd"]) == pytest.approx(0.25)
    c = word_errors(["", "a"], ["b c", ""])
    assert (c.insertions, c.deletions, c.ref_units) == (2, 1, 1)
    assert wer([], []) == 0.0 and cer([], []) == 0.0
    assert all(math.isfinite(x) for x in (wer([""], ["a"]), cer([""], ["a"])))


def test_empty_hypothesis_and_input_checks():
    assert wer(["a b", "c"], ["", ""]) == 1.0
    assert sentence_wer("a", "a") == wer("a", "a") == 0.0    # bare strings accepted
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(TypeError):
        wer(["a"], [None])


# --- the metrics' normaliser: Whisper's, as published WERs use ------------------------------------


@pytest.mark.parametrize("raw, expected", [
    ("Mr. Smith met Dr. Jones", "mister smith met doctor jones"),        # titles spelled out
    ("The colour of the theatre", "the color of the theater"),          # Whisper's British→American map
    ("twenty-one cats and 21 dogs", "21 cats and 21 dogs"),              # numbers as digits
    ("one oh one", "101"),
    ("I can't, uh, do it... um", "i can not do it"),                     # contraction, fillers dropped
    ("Don’t stop", "do not stop"),                                       # typographic apostrophe first
    ("he said [inaudible] (laughs) yes", "he said yes"),                 # annotations dropped
    ("$20 million, 1,000 people", "$20000000 1000 people"),
    ("…!?", ""), ("\u200b\u00ad", ""), ("", ""),                         # nothing left: blank
    ("1" * 5000, "1" * 5000),                                             # too long for int(): kept
])
def test_normalize_for_scoring_english(raw, expected):
    assert normalize_for_scoring(raw) == normalize_for_scoring(raw, "en-US") == expected


def test_normalize_for_scoring_other_languages_keep_their_words():
    """Bug fixed: English number words were applied to Spanish references ("21" → "twenty one")."""
    assert normalize_for_scoring("¿Tiene 21 años, Señor García?", "es") == "tiene 21 años señor garcía"
    assert normalize_for_scoring("Mr. uh", "de") == "mr uh"  # English rules only for English
    assert [is_english(x) for x in (None, "", "en", "English", "en_GB", "es", "es-MX", "Spanish")] == [
        True, True, True, True, True, False, False, False]


def test_wer_counts_spelling_variants_of_the_same_words_as_no_error():
    """Bug fixed: "Mr." vs "mister" and "21" vs "twenty one" counted as errors."""
    assert sentence_wer("Mr. Smith has 21 cats.", "mister smith has twenty one cats") == 0.0
    assert sentence_wer("It's the 3rd time", "it is the third time") == 0.0
    assert sentence_cer("Dr. No", "doctor no") == 0.0
    assert sentence_wer("21 años", "veintiún años", language="es") == 0.5  # no English number words


def test_reward_and_evaluation_wer_are_one_normaliser():
    from speechrl.eval.speech_tasks import task_metrics
    from speechrl.rewards import accuracy_cer, accuracy_wer

    refs = ["Mr. Smith has 21 cats.", "It's the 3rd time, uh, I think", "the red fox"]
    hyps = ["mister smith has twenty one cats", "it is the third time i think", "the fox ran"]
    rewards = accuracy_wer(None, hyps, reference=refs, language=["en"] * 3)
    assert rewards == [1.0 - sentence_wer(r, h) for r, h in zip(refs, hyps)] == [1.0, 1.0, pytest.approx(1 / 3)]
    assert accuracy_cer(None, hyps, reference=refs) == [1.0 - sentence_cer(r, h) for r, h in zip(refs, hyps)]
    reported = task_metrics("asr", hyps, refs, semantic=False)
    assert (reported["wer"], reported["cer"]) == (round(wer(refs, hyps), 4), round(cer(refs, hyps), 4))
    assert reported["wer"] == round(2 / 15, 4)  # "the fox ran": 2 edits; 5 + 7 ("uh" dropped) + 3 words


def test_translation_bleu_is_reported_normalised_and_as_sacrebleu_scores_raw_text():
    import sacrebleu

    from speechrl.eval.speech_tasks import task_metrics

    refs = ["El gato tiene 3 años.", "¿Dónde está la casa?"]
    hyps = ["el gato tiene 3 años", "donde esta la casa"]
    metrics = task_metrics("ast", hyps, refs, semantic=False)
    assert metrics["bleu_sacre"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2) < metrics["bleu"]
    norm = [normalize_for_scoring(x, "es") for x in (*hyps, *refs)]
    assert norm[0] == norm[2] == "el gato tiene 3 años"  # Spanish: no English number words
    assert metrics["bleu"] == round(sacrebleu.corpus_bleu(norm[:2], [norm[2:]]).score, 2)


def test_translation_is_scored_in_each_items_target_language():
    """An English target (a CoVoST 2 X→en pair) is normalised as English, a Spanish one as Spanish, item
    by item, in the metrics and in the per-item statistics the intervals are computed from."""
    import sacrebleu

    from speechrl.eval.bootstrap import bleu_stats
    from speechrl.eval.speech_tasks import task_item_stats, task_metrics

    refs = ["Mr. Smith has 21 cats.", "¿Dónde está la casa?"]
    hyps = ["mister smith has twenty one cats", "dónde está la casa"]
    languages = ["en", "es"]
    norm = lambda texts: [normalize_for_scoring(t, lang) for t, lang in zip(texts, languages)]
    assert norm(hyps) == norm(refs)
    metrics = task_metrics("ast", hyps, refs, semantic=False, languages=languages)
    assert metrics["bleu"] == round(sacrebleu.corpus_bleu(norm(hyps), [norm(refs)]).score, 2) == 100.0
    assert task_metrics("ast", hyps, refs, semantic=False)["bleu"] < 100  # both read as Spanish
    assert task_item_stats("ast", hyps, refs, languages)["bleu"] == bleu_stats(norm(hyps), norm(refs)).tolist()
