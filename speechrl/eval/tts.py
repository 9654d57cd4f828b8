"""Held-out evaluation of TTS policies: synthesize speech tokens, render them (units → vocoder →
audio → Whisper), score the transcripts against the texts.

:func:`evaluate_tts` gives corpus ``wer``/``cer`` (normalised text), ``duration_ratio`` (rendered
seconds over the reference speech's) and mean speech ``tokens``, plus per-text details (for samples,
reports and paired intervals). The decoding is seeded (:class:`DecodeConfig`), so every system is
evaluated with the same sampling noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from speechrl.audio import SAMPLE_RATE
from speechrl.config import doc
from speechrl.text import cer, sentence_wer, wer

if TYPE_CHECKING:
    from speechrl.rewards.tts import UnitRenderer
    from speechrl.trainers.tts_sft import TTSExample

__all__ = ["DecodeConfig", "synthesize", "evaluate_tts", "tts_metrics"]


@dataclass
class DecodeConfig:
    temperature: float = doc("sampling temperature for evaluation (0: greedy)", 0.0, ge=0)
    top_k: int = doc("top-k truncation when sampling (0: off)", 0, ge=0)
    top_p: float = doc("nucleus mass when sampling", 1.0, gt=0, le=1)
    max_new_tokens: int = doc("speech-token cap per utterance", 128, ge=1)
    batch_size: int = doc("texts decoded together", 32, ge=1)
    seed: int = doc("seed of the evaluation sampler (same samples for every system)", 0)



@torch.no_grad()
def synthesize(policy: Any, texts: Sequence[str], decode: DecodeConfig) -> list[Any]:
    """Texts → speech-token units (:class:`~speechrl.speech.units.Units`), decoded with ``decode``
    (a seeded sampler, so every system sees the same noise)."""
    was_training = policy.training
    policy.eval()
    gen = torch.Generator(device=policy.device).manual_seed(decode.seed)
    units = []
    for i in range(0, len(texts), decode.batch_size):
        ids = policy.generate(policy.encode(texts[i:i + decode.batch_size]), decode.max_new_tokens,
                              do_sample=decode.temperature > 0, temperature=decode.temperature, top_k=decode.top_k,
                              top_p=decode.top_p, generator=gen)
        units += policy.to_units(ids)
    policy.train(was_training)
    return units


def evaluate_tts(policy: Any, examples: Sequence[TTSExample], renderer: UnitRenderer, decode: DecodeConfig,
                 desc: str = "eval") -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Synthesize, render, transcribe. Metrics: ``wer``/``cer`` (corpus-level, normalised text),
    ``duration_ratio`` (mean over texts of rendered seconds / reference-speech seconds), ``tokens``
    (mean speech tokens). Details per text: ``id, text, hypothesis, wer, seconds, wav``."""
    t0 = time.time()
    texts = [e.text for e in examples]
    units = synthesize(policy, texts, decode)
    wavs, hyps = [], []
    for i in tqdm(range(0, len(units), 8), desc=desc, unit="batch", leave=False):
        w, h = renderer(units[i:i + 8])
        wavs += w
        hyps += h
    return tts_metrics(examples, wavs, hyps, [len(u) for u in units], time.time() - t0)


def tts_metrics(examples: Sequence[TTSExample], wavs: Sequence[np.ndarray], hyps: Sequence[str],
                tokens: Sequence[int] | None = None, seconds: float = 0.0) -> tuple[dict[str, float], list[dict]]:
    texts = [e.text for e in examples]
    secs = [len(w) / SAMPLE_RATE for w in wavs]
    ratios = [s / e.seconds for s, e in zip(secs, examples) if e.seconds > 0]
    metrics = {"wer": round(wer(texts, hyps), 4), "cer": round(cer(texts, hyps), 4),
               "duration_ratio": round(float(np.mean(ratios)), 4) if ratios else math.nan,
               "eval_s": round(seconds, 1)}
    if tokens is not None:
        metrics["tokens"] = round(float(np.mean(tokens)), 2)
    details = [{"id": e.id, "text": e.text, "hypothesis": h, "wer": round(sentence_wer(e.text, h), 4),
                "seconds": round(s, 3), "wav": w} for e, h, s, w in zip(examples, hyps, secs, wavs)]
    return metrics, details
