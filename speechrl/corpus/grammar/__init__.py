"""Text side of the synthesized spoken corpus: a small bilingual grammar of short stories.

Every story has 4–6 short sentences about one protagonist (name + pronoun), a place, an object
(with a quantity and an adjective) and a companion:

    Anna walked to the market on Monday morning.      Anna caminó al mercado el lunes por la mañana.
    She bought three red apples.                      Ella compró tres manzanas rojas.
    Then, she met her friend Tom near the river.      Luego, ella se encontró con su amigo Tom cerca del río.
    In the evening, Anna ate the apples with Tom at home.
                                                      Por la noche, Anna comió las manzanas con Tom en casa.

The last sentence is a *coherent ending*: it depends on the protagonist, the companion, the object
(or the place) introduced earlier, which is what the story-cloze builders perturb.

Translation is not word-by-word: each production emits English and Spanish from the same
derivation (the same cast and lexical choices), and the Spanish side applies its own rules —
adjective after the noun, gender and number agreement of articles and adjectives, preterite
conjugation (3rd person singular/plural), ``a el → al`` / ``de el → del``, *gustar* agreeing with
its object, *tomar prestado* agreeing with the borrowed thing.

Each sentence carries questions about its own content whose answers are spans of the sentence
(spoken QA), each answer also said as a sentence in 2–4 wordings (``QA.answers``: "Where did Anna walk?" →
"Anna walked to the market." / "She walked to the market." / "Anna went to the market."; derived from the
choices already made, so they draw nothing from the random stream and every other output is as before
they existed), and keywords (names, places, landmarks, objects; for the ASR keyword reward).

Evaluation builders for Align-SLM's likelihood minimal pairs: :func:`story_cloze_pairs`
(S-/T-StoryCloze), :func:`blimp_pairs` (sBLIMP) and :func:`wuggy_pairs` (sWUGGY).

The vocabulary is small (≈220 words, see :func:`vocabulary`), every word is in the CMU dictionary,
numbers are spelled as words, and it never holds both members of a common homophone pair: no
"two", "four", "eight", "one" (to/for/ate/won), no "read" (red), "sea", "by", "son", "flour".
Everything is deterministic per seed: only ``random.Random(seed)`` is used, and every random choice
is made from a tuple or list in a fixed order.

The grammar lives in three modules: :mod:`~speechrl.corpus.grammar.lexicon` (word types and tables),
:mod:`~speechrl.corpus.grammar.stories` (the derivation, the productions, stories, the vocabulary) and
:mod:`~speechrl.corpus.grammar.benchmark_pairs` (story-cloze, BLiMP and WUGGY pairs).
"""

from speechrl.corpus.grammar.benchmark_pairs import (BLIMP_PHENOMENA, BlimpPair, ClozePair, WuggyPair, blimp_pairs,
                                                     story_cloze_pairs, wuggy_pairs)
from speechrl.corpus.grammar.stories import (QA, Sentence, Story, english_content_words, fresh_sentences,
                                             fresh_stories, generate_stories, vocabulary)

__all__ = [
    "QA",
    "Sentence",
    "Story",
    "ClozePair",
    "BlimpPair",
    "WuggyPair",
    "generate_stories",
    "fresh_sentences",
    "fresh_stories",
    "story_cloze_pairs",
    "blimp_pairs",
    "wuggy_pairs",
    "vocabulary",
    "english_content_words",
    "BLIMP_PHENOMENA",
]
