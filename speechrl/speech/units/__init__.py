"""Discrete speech units: audio (16 kHz mono float32) → :class:`Units`.

Three back ends behind one interface (:class:`UnitTokenizer`), built by :func:`make_unit_tokenizer`:

``"phoneme"`` (:class:`PhonemeUnitTokenizer`, default, offline, pretrained)
    hama 1.7.0's phoneme CTC model, its packaged weights run in PyTorch (≈ 10× faster than hama's own
    engine, the same units; :mod:`~speechrl.speech.units.hama_torch`). Its frame-level argmax ids
    (50 frames/s, 320 samples a frame) are CTC-collapsed into one unit per emitted token, with a duration in frames. Unit ids are
    hama's decoder ids (``0..188``: IPA symbols, some specials) plus the word boundary
    :data:`WORD_BOUNDARY_ID` (``189``); the CTC blank (``190``) never appears in units.

    *Blank handling (the choice documented here):* a run of blank frames is **merged into the
    duration of the unit before it** — a phoneme lasts from its emission to the next emission, as
    in hama's own ``phoneme_spans``. Blank frames before the first emission (leading silence)
    become a leading word-boundary unit. Hence ``sum(units.durations) == number of frames``
    exactly, and a pause between words ends up in the duration of the word-boundary unit.

``"mfcc-kmeans"`` (:class:`MFCCKMeansTokenizer`, truly textless)
    13 MFCCs + deltas + delta-deltas (numpy/scipy, 25 ms window, 20 ms hop = 50 frames/s),
    standardized, then the nearest of K k-means centroids (k-means++ via ``scipy.cluster.vq``,
    deterministic for a seed). Fit with :meth:`~MFCCKMeansTokenizer.fit` on a list of wavs;
    :meth:`save` / :meth:`load` keep centroids (safetensors) and config (JSON).

``"hubert-kmeans"`` (:class:`HubertKMeansTokenizer`, for users with weights)
    Hidden states of one layer of a Hugging Face ``HubertModel`` (TWIST: layer 11, 500 clusters),
    clustered the same way. Frame rate from the conv strides (320 → 50 Hz).

Frame-level back ends return one unit per frame (durations all 1); :meth:`UnitTokenizer.dedup`
(run-length: collapse repeats, sum durations) gives the deduplicated sequence a unit LM is trained
on (TWIST removes duplicates); the durations are what a TTS/vocoder needs.

Text, not audio: :func:`text_phonemes` gives a text's phonemes in the same hama ids (hama's G2P, no
durations; :mod:`~speechrl.speech.units.g2p`), what a TTS LM can read instead of BPE tokens.

Modules: :mod:`~speechrl.speech.units.base` (:class:`Units`, :func:`dedup`, the interface),
:mod:`~speechrl.speech.units.phoneme` (hama; its model in :mod:`~speechrl.speech.units.hama_torch`), :mod:`~speechrl.speech.units.kmeans` (MFCC / HuBERT
k-means) and :mod:`~speechrl.speech.units.g2p` (text → phonemes); everything is importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechrl.speech.units.base import Units, UnitTokenizer, dedup
from speechrl.speech.units.g2p import text_phonemes
from speechrl.speech.units.kmeans import (HubertKMeansTokenizer, MFCCKMeansTokenizer, _KMeansTokenizer, kmeans_fit,
                                          mfcc_features)
from speechrl.speech.units.phoneme import (BLANK_ID, WORD_BOUNDARY, WORD_BOUNDARY_ID, PhonemeUnitTokenizer,
                                           ctc_frames_to_units, hama_tokens)

__all__ = [
    "Units",
    "UnitTokenizer",
    "PhonemeUnitTokenizer",
    "MFCCKMeansTokenizer",
    "HubertKMeansTokenizer",
    "make_unit_tokenizer",
    "dedup",
    "ctc_frames_to_units",
    "mfcc_features",
    "kmeans_fit",
    "hama_tokens",
    "text_phonemes",
    "UNIT_TOKENIZERS",
    "WORD_BOUNDARY_ID",
    "BLANK_ID",
    "WORD_BOUNDARY",
]

UNIT_TOKENIZERS: dict[str, type[UnitTokenizer]] = {
    "phoneme": PhonemeUnitTokenizer,
    "mfcc-kmeans": MFCCKMeansTokenizer,
    "hubert-kmeans": HubertKMeansTokenizer,
}


def make_unit_tokenizer(name: str = "phoneme", path: str | Path | None = None, **kw: Any) -> UnitTokenizer:
    """Build a unit tokenizer by name. ``path``: a folder written by ``save()`` to load a fitted
    k-means tokenizer from; other keywords go to the constructor."""
    if name not in UNIT_TOKENIZERS:
        raise ValueError(f"unknown unit tokenizer {name!r}; allowed: {', '.join(UNIT_TOKENIZERS)}")
    cls = UNIT_TOKENIZERS[name]
    if path is not None:
        if not issubclass(cls, _KMeansTokenizer):
            raise ValueError(f"unit tokenizer {name!r} has nothing to load from {path}")
        return cls.load(path, **kw)
    return cls(**kw)
