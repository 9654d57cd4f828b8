"""Held-out evaluation of TTS policies: synthesize speech tokens, render them (units → vocoder →
audio → Whisper), score the transcripts against the texts.

:func:`evaluate_tts` gives corpus ``wer``/``cer`` (normalised text), ``content_words``, ``duration_ratio`` (rendered
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
from speechrl.corpus.grammar.lexicon import FUNCTION_WORDS
from speechrl.text import cer, content_word_accuracy, sentence_wer, wer

if TYPE_CHECKING:
    from speechrl.rewards.tts import UnitRenderer
    from speechrl.trainers.tts_sft import TTSExample

__all__ = ["DecodeConfig", "synthesize", "evaluate_tts", "tts_metrics", "sample_speech", "reward_ranking"]


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
    ``content_words`` (the share of the texts' content words — words outside the corpus lexicon's English
    closed-class ``FUNCTION_WORDS`` — that the transcripts say, :func:`~speechrl.text.content_word_accuracy`),
    ``duration_ratio`` (mean over texts of rendered seconds / reference-speech seconds), ``tokens``
    (mean speech tokens). Details per text: ``id, text, hypothesis, wer, seconds, wav``."""
    t0 = time.time()
    texts = [e.text for e in examples]
    units = synthesize(policy, texts, decode)
    wavs, hyps = render(renderer, units, desc)
    return tts_metrics(examples, wavs, hyps, [len(u) for u in units], time.time() - t0)


def render(renderer: UnitRenderer, units: Sequence[Any], desc: str) -> tuple[list[np.ndarray], list[str]]:
    """``renderer`` over ``units`` 8 at a time, with a progress bar: (waveforms, transcripts)."""
    wavs, hyps = [], []
    for i in tqdm(range(0, len(units), 8), desc=desc, unit="batch", leave=False):
        w, h = renderer(units[i:i + 8])
        wavs += w
        hyps += h
    return wavs, hyps


def tts_metrics(examples: Sequence[TTSExample], wavs: Sequence[np.ndarray], hyps: Sequence[str],
                tokens: Sequence[int] | None = None, seconds: float = 0.0) -> tuple[dict[str, float], list[dict]]:
    texts = [e.text for e in examples]
    secs = [len(w) / SAMPLE_RATE for w in wavs]
    ratios = [s / e.seconds for s, e in zip(secs, examples) if e.seconds > 0]
    metrics = {"wer": round(wer(texts, hyps), 4), "cer": round(cer(texts, hyps), 4),
               "content_words": round(content_word_accuracy(texts, hyps, FUNCTION_WORDS), 4),
               "duration_ratio": round(float(np.mean(ratios)), 4) if ratios else math.nan,
               "eval_s": round(seconds, 1)}
    if tokens is not None:
        metrics["tokens"] = round(float(np.mean(tokens)), 2)
    details = [{"id": e.id, "text": e.text, "hypothesis": h, "wer": round(sentence_wer(e.text, h), 4),
                "seconds": round(s, 3), "wav": w} for e, h, s, w in zip(examples, hyps, secs, wavs)]
    return metrics, details


def sample_speech(policy: Any, texts: Sequence[str], renderer: UnitRenderer, temperature: float,
                  max_new_tokens: int = 128, seed: int = 0, desc: str = "samples"
                  ) -> tuple[list[Any], list[np.ndarray], list[str]]:
    """One sample per text (repeat a text for a group) at ``temperature``, seeded (:func:`synthesize`):
    (units, rendered waveforms, transcripts)."""
    units = synthesize(policy, texts, DecodeConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed))
    return (units, *render(renderer, units, desc))


def reward_ranking(policy: Any, token2text: Any, texts: Sequence[str], renderer: UnitRenderer, samples: int = 4,
                   temperature: float = 0.7, max_new_tokens: int = 128, seed: int = 1) -> dict[str, float]:
    """How well the Token2Text reward ranks the policy's own samples: Spearman ρ between its mean
    log-likelihood of the text per text token and −WER of the rendered sample, within each text's
    ``samples`` samples (what a group advantage sees; groups with ties only are left out) and pooled."""
    from scipy.stats import spearmanr

    from speechrl.trainers.tts_sft import unit_tokens

    group = [t for t in texts for _ in range(samples)]
    units, _, hyps = sample_speech(policy, group, renderer, temperature, max_new_tokens, seed, "reward ranking")
    lps = []
    with torch.no_grad():
        for i in range(0, len(group), 32):
            ids, mask = unit_tokens(token2text.vocab, units[i:i + 32], max_new_tokens, token2text.device)
            text_ids, text_mask = token2text.text_targets(group[i:i + 32])
            lps += (token2text.text_logprob(ids, mask, text_ids, text_mask) / text_mask.sum(-1)).tolist()
    lp = np.array(lps).reshape(-1, samples)
    neg_wer = -np.array([sentence_wer(t, h) for t, h in zip(group, hyps)]).reshape(-1, samples)
    within = [spearmanr(a, b)[0] for a, b in zip(lp, neg_wer) if a.std() > 0 and b.std() > 0]
    pooled = spearmanr(lp.ravel(), neg_wer.ravel())[0] if lp.std() > 0 and neg_wer.std() > 0 else math.nan
    return {"within_group_spearman": round(float(np.mean(within)), 3) if within else math.nan,
            "groups": len(within), "pooled_spearman": round(float(pooled), 3),
            "sample_wer": round(float(-neg_wer.mean()), 4)}
