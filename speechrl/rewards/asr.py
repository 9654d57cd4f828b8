"""Rule-based rewards for transcription-like outputs (Tongyi, arXiv 2509.18569): accuracy from WER/CER, CosyVoice's
1 − tanh(3·WER), the keyword score, and the hallucination penalty.

Error rates come from :mod:`speechrl.text` (jiwer) on text normalised by
:func:`speechrl.text.normalize_for_scoring` — Whisper's English normaliser, or its basic one when the
sample's ``language`` column names another language — the same function the evaluation's WER/CER
uses, so the reward and the reported metric never disagree about what an error is. The keyword and
hallucination checks match words through :func:`speechrl.text.normalize` (case, punctuation and
numbers do not count). A blank reference is handled as ``speechrl.text`` documents: every hypothesis
word is an insertion, so ``WER("", "oh yes") = 2``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from speechrl.rewards.batch import completion_texts, list_column, reward, text_column
from speechrl.text import normalize, sentence_cer, sentence_wer

__all__ = ["ACCURACY_FLOOR", "accuracy_wer", "accuracy_cer", "tanh_wer", "keyword_score",
           "keyword_precision_recall", "is_repetitive", "has_unsupported_content",
           "detect_language", "is_wrong_language", "Hallucination", "hallucination"]

ACCURACY_FLOOR = -1.0
"""``accuracy_*`` = max(1 − rate, −1). WER > 1 only comes from insertions; the floor keeps a
runaway output from dominating its group's std while still ranking WER 1.5 below WER 1."""


def _rates(completions, reference, rate, language) -> list[float]:
    """``rate(ref, hyp, language=...)`` per sample; ``language`` is the optional per-sample column."""
    hyps = completion_texts(completions)
    refs = text_column(reference, "reference", len(hyps))
    langs = [None] * len(hyps) if language is None else text_column(language, "language", len(hyps))
    return [rate(ref, hyp, language=lang) for hyp, ref, lang in zip(hyps, refs, langs)]


@reward("accuracy_wer", ACCURACY_FLOOR, 1.0)
def accuracy_wer(prompts: Sequence[Any] | None, completions: Sequence[Any],
                 reference: Sequence[str], language: Sequence[str] | None = None, **columns: Any) -> list[float]:
    """Tongyi's ASR accuracy, max(1 − WER, −1), on normalised words; in [−1, 1] (1 = exact)."""
    return [max(1.0 - w, ACCURACY_FLOOR) for w in _rates(completions, reference, sentence_wer, language)]


@reward("accuracy_cer", ACCURACY_FLOOR, 1.0)
def accuracy_cer(prompts: Sequence[Any] | None, completions: Sequence[Any],
                 reference: Sequence[str], language: Sequence[str] | None = None, **columns: Any) -> list[float]:
    """max(1 − CER, −1) on normalised text (spaces between words count); in [−1, 1]."""
    return [max(1.0 - c, ACCURACY_FLOOR) for c in _rates(completions, reference, sentence_cer, language)]


@reward("tanh_wer", 0.0, 1.0)
def tanh_wer(prompts: Sequence[Any] | None, completions: Sequence[Any],
             reference: Sequence[str], language: Sequence[str] | None = None, **columns: Any) -> list[float]:
    """1 − tanh(3·WER) (the public CosyVoice recipe's ASR reward); in [0, 1], 1 at WER 0,
    0.095 at WER 0.5, → 0 as WER grows."""
    return [1.0 - math.tanh(3.0 * w) for w in _rates(completions, reference, sentence_wer, language)]


def _count_phrase(words: list[str], phrase: list[str]) -> int:
    """Non-overlapping occurrences of the word sequence ``phrase`` in ``words``."""
    n, count, i = len(phrase), 0, 0
    while i + n <= len(words):
        if words[i:i + n] == phrase:
            count, i = count + 1, i + n
        else:
            i += 1
    return count


def keyword_precision_recall(hypothesis: str, reference: str,
                             keywords: Sequence[str]) -> tuple[float, float]:
    """(precision, recall) of the keyword list, counted in occurrences on normalised words.

    For each distinct normalised keyword k (a word or a phrase; blanks dropped), r_k and h_k are its
    occurrences in the reference and the hypothesis, and hits = Σ_k min(r_k, h_k):

    - recall    = hits / Σ_k r_k — share of the keyword mentions in the reference that the
      hypothesis got;
    - precision = hits / Σ_k h_k — share of the keyword mentions in the hypothesis that the
      reference backs (a keyword said but not in the audio is a false alarm).

    Recall is 1 when the reference mentions no keyword (nothing to find). Precision is 1 when the
    hypothesis mentions none and neither does the reference, but 0 when the reference does: an
    empty or off-topic output must not earn the "no false alarm" half of the score. Keywords are
    counted independently, so "new york" and "york" both count in "new york".
    """
    hyp, ref = normalize(hypothesis).split(), normalize(reference).split()
    phrases = {tuple(k.split()) for k in (normalize(k) for k in keywords) if k}
    hits = in_ref = in_hyp = 0
    for phrase in phrases:
        r, h = _count_phrase(ref, list(phrase)), _count_phrase(hyp, list(phrase))
        hits, in_ref, in_hyp = hits + min(r, h), in_ref + r, in_hyp + h
    precision = hits / in_hyp if in_hyp else float(in_ref == 0)
    recall = hits / in_ref if in_ref else 1.0
    return precision, recall


@reward("keyword_score", 0.0, 1.0)
def keyword_score(prompts: Sequence[Any] | None, completions: Sequence[Any],
                  reference: Sequence[str], keywords: Sequence[Sequence[str]],
                  **columns: Any) -> list[float | None]:
    """Tongyi's keyword score, (precision + recall) / 2 of the sample's ``keywords`` (see
    :func:`keyword_precision_recall`); in [0, 1]. A sample without keywords (none given, or only
    blank ones) has nothing to judge: None, "not applicable", so
    :class:`~speechrl.rewards.WeightedReward` leaves this term out of its total rather than adding
    a free constant."""
    hyps = completion_texts(completions)
    refs = text_column(reference, "reference", len(hyps))
    kws = list_column(keywords, "keywords", len(hyps))
    return [sum(keyword_precision_recall(h, r, k)) / 2.0 if any(normalize(w) for w in k) else None
            for h, r, k in zip(hyps, refs, kws)]


# --- hallucination sub-checks ----------------------------------------------------------------


def _longest_runs(words: list[str]) -> dict[str, int]:
    runs: dict[str, int] = {}
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j] == words[i]:
            j += 1
        runs[words[i]] = max(runs.get(words[i], 0), j - i)
        i = j
    return runs


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def is_repetitive(hypothesis: str, reference: str = "", *, n: int = 3, min_count: int = 3,
                  min_run: int = 4) -> bool:
    """A decoding loop: some word n-gram occurs ``min_count`` (3) or more times, or one word repeats
    ``min_run`` (4) or more times in a row — and more often than in the reference (a reference that
    itself says "no no no no" licenses it). Words are normalised; default n = 3."""
    hyp, ref = normalize(hypothesis).split(), normalize(reference).split()
    ref_ngrams = _ngram_counts(ref, n)
    if any(c >= min_count and c > ref_ngrams[g] for g, c in _ngram_counts(hyp, n).items()):
        return True
    ref_runs = _longest_runs(ref)
    return any(r >= min_run and r > ref_runs.get(w, 0) for w, r in _longest_runs(hyp).items())


def has_unsupported_content(hypothesis: str, reference: str, *, max_share: float = 0.3,
                            max_length_ratio: float = 1.3) -> bool:
    """Content that is not in the audio: the hypothesis is longer than ``max_length_ratio`` (1.3) ×
    the reference **and** more than ``max_share`` (30 %) of its words are unsupported.

    Unsupported words = the multiset difference hypothesis − reference (a word said more often than
    the reference says it counts once per extra use). Both conditions are needed: an output of the
    right length with wrong words is a recognition error, which WER already scores. A non-blank
    output for a blank reference is always unsupported content.
    """
    hyp, ref = normalize(hypothesis).split(), normalize(reference).split()
    if not hyp:
        return False
    unsupported = sum((Counter(hyp) - Counter(ref)).values())
    longer = len(hyp) > max_length_ratio * len(ref)
    return longer and unsupported / len(hyp) > max_share


_ENGLISH = frozenset("""the and of to in is was it that with for on at by this from they she his her
you we are were be have has had not but or an what which there their will would can could into
very then went did my your our who when where how why after before because said i its them
been""".split())
_SPANISH = frozenset("""el la los las de del y que en un una unos unas es por con para su sus se lo
al pero como más muy está están fue era tiene hay cuando donde porque yo tú él ella ellos nosotros
mi tu también sí le les nos este esta ese esa estaba tenía ya""".split())
_SPANISH_LETTERS = frozenset("ñáéíóúü")
_LANGUAGE_NAMES = {"english": "en", "eng": "en", "spanish": "es", "spa": "es", "español": "es",
                   "espanol": "es", "castellano": "es"}


def detect_language(text: str, *, min_evidence: int = 2) -> str | None:
    """Cheap English/Spanish identification: ``"en"``, ``"es"`` or None (undecided).

    Evidence per word (normalised, numbers left as digits): an English function word counts for
    "en"; a Spanish function word or a word with a Spanish letter (ñ, á, é, í, ó, ú, ü) for "es".
    The two word lists share no word ("a", "no", "me", "he" are left out). Undecided when the
    larger count is below ``min_evidence`` (2) or the counts tie.
    """
    en = es = 0
    for word in normalize(text, spell_numbers=False).split():
        if word in _ENGLISH:
            en += 1
        elif word in _SPANISH or not _SPANISH_LETTERS.isdisjoint(word):
            es += 1
    if max(en, es) < min_evidence or en == es:
        return None
    return "en" if en > es else "es"


def _language_code(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip().lower()
    return _LANGUAGE_NAMES.get(value, value.replace("_", "-").split("-")[0])


def is_wrong_language(hypothesis: str, expected: str | None, reference: str = "", *,
                      min_evidence: int = 2) -> bool:
    """The hypothesis is confidently in the other language than ``expected`` ("en"/"es", or a name
    or tag such as "English", "es-ES"). Only English and Spanish are judged: any other expected
    language, or an undecided hypothesis, gives False; so does a ``reference`` that itself reads as
    the hypothesis's language (an English sentence of Spanish names, "José y María")."""
    expected = _language_code(expected)
    if expected not in ("en", "es"):
        return False
    found = detect_language(hypothesis, min_evidence=min_evidence)
    if found is None or found == expected:
        return False
    return detect_language(reference, min_evidence=min_evidence) != found


@dataclass(frozen=True)
class Hallucination:
    """Tongyi's hallucination reward: −1 when the output hallucinates, else 0; in [−1, 0].

    Hallucinating = any of :func:`is_repetitive` (a decoding loop), :func:`has_unsupported_content`
    (content not in the audio) or :func:`is_wrong_language` (e.g. translating instead of
    transcribing). The expected language is the ``language`` column when given, else the one
    :func:`detect_language` finds in the reference (the check is skipped when neither decides).
    The fields are the sub-checks' thresholds; ``hallucination`` is the default instance.
    """

    ngram: int = 3
    min_ngram_count: int = 3
    min_run: int = 4
    max_unsupported_share: float = 0.3
    max_length_ratio: float = 1.3
    min_language_evidence: int = 2

    name = "hallucination"
    __name__ = "hallucination"
    value_range = (-1.0, 0.0)

    def checks(self, hypothesis: str, reference: str,
               language: str | None = None) -> dict[str, bool]:
        """Which sub-checks fire for one sample (``repetition``, ``unsupported``,
        ``wrong_language``)."""
        expected = _language_code(language) or detect_language(
            reference, min_evidence=self.min_language_evidence)
        return {
            "repetition": is_repetitive(hypothesis, reference, n=self.ngram,
                                        min_count=self.min_ngram_count, min_run=self.min_run),
            "unsupported": has_unsupported_content(hypothesis, reference,
                                                   max_share=self.max_unsupported_share,
                                                   max_length_ratio=self.max_length_ratio),
            "wrong_language": is_wrong_language(hypothesis, expected, reference,
                                                min_evidence=self.min_language_evidence),
        }

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 reference: Sequence[str], language: Sequence[str] | None = None,
                 **columns: Any) -> list[float]:
        hyps = completion_texts(completions)
        refs = text_column(reference, "reference", len(hyps))
        langs = [None] * len(hyps) if language is None else text_column(language, "language",
                                                                          len(hyps))
        return [-1.0 if any(self.checks(h, r, lang or None).values()) else 0.0
                for h, r, lang in zip(hyps, refs, langs)]


hallucination = Hallucination()
