"""Paired bootstrap confidence intervals of a system's difference to the baseline on the same test items.

Each test item (utterance, question, text, prompt, minimal pair) carries its *sufficient statistics* for
the reported corpus-level metric, so the statistic of a resample is the metric as reported, recomputed on
the resampled items:

- **error rates** (WER, CER) — per item ``[edits, reference units]`` (jiwer, through
  :func:`speechrl.text.word_errors` / :func:`~speechrl.text.char_errors`); corpus rate
  ``Σ edits / max(Σ reference units, 1)``, exactly :attr:`speechrl.text.ErrorCounts.rate`;
- **means** of per-item scores (judge scores, minimal-pair accuracies) — per item ``[score sum, count]``;
  statistic ``Σ sum / max(Σ count, 1)``, the same ratio (an item may hold several scores, e.g. the judge
  scores of a prompt's continuations, so the mean stays over scores while prompts are resampled);
- **corpus BLEU** — per item sacreBLEU's segment statistics ``[hyp length, ref length, matches_1..4,
  totals_1..4]``; statistic ``BLEU.compute_bleu`` on their sums (13a, "exp" smoothing, no effective
  order: :func:`sacrebleu.corpus_bleu`'s defaults, so it equals the reported corpus BLEU).

Method (:func:`paired_bootstrap`): draw ``B`` = 1,000 index sets ``I_b`` of ``n`` items with replacement
from a generator seeded with ``seed`` (the same command gives the same interval); for each,
``Δ_b = f(Σ_{i∈I_b} s_i^system) − f(Σ_{i∈I_b} s_i^baseline)`` — *paired*: one index set for both. The
interval is the 2.5th and 97.5th percentiles of ``Δ_1..Δ_B`` (numpy's linear interpolation); the
observed difference is ``f(Σ_i s_i^system) − f(Σ_i s_i^baseline)``; the change is significant when 0
lies outside ``[low, high]``. A system identical to the baseline gives ``[0, 0]``, not significant.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sacrebleu.metrics.bleu import BLEU

from speechrl.text import char_errors, word_errors

__all__ = ["RESAMPLES", "error_stats", "mean_stats", "bleu_stats", "ratio", "corpus_bleu", "statistic_for",
           "paired_bootstrap", "intervals"]

RESAMPLES = 1000
Statistic = Callable[[np.ndarray], np.ndarray]  # summed stats (..., k) → metric (...)


def error_stats(refs: Sequence[str], hyps: Sequence[str], unit: str = "word",
                language: str | None = None) -> np.ndarray:
    """``(n, 2)``: per item ``[edits, reference words]`` (``unit="char"``: characters), text normalised
    for ``language`` as the reported WER/CER is."""
    count = word_errors if unit == "word" else char_errors
    return np.array([[(c := count(r, h, language=language)).errors, c.ref_units] for r, h in zip(refs, hyps)],
                    dtype=float).reshape(-1, 2)


def mean_stats(scores: Sequence[float | Sequence[float]]) -> np.ndarray:
    """``(n, 2)``: per item ``[Σ scores, number of scores]``; an item is one score or a list of them."""
    rows = [[float(np.sum(s)), float(np.size(s))] for s in scores]
    return np.array(rows, dtype=float).reshape(-1, 2)


def bleu_stats(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> np.ndarray:
    """``(n, 10)``: per item sacreBLEU's ``[sys_len, ref_len, counts_1..4, totals_1..4]`` against the item's
    reference or its list of references (matches clipped by the most any reference holds, ``ref_len``
    the closest reference length: what multi-reference corpus BLEU sums); texts as given — normalise
    them as the reported BLEU does."""
    bleu = BLEU()
    rows = []
    for h, r in zip(hyps, refs):
        s = bleu.corpus_score([h], [[r]] if isinstance(r, str) else [[x] for x in r])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.array(rows, dtype=float).reshape(-1, 10)


def ratio(summed: np.ndarray) -> np.ndarray:
    """``Σ numerator / max(Σ denominator, 1)`` on the last axis (error rate, mean score)."""
    return summed[..., 0] / np.maximum(summed[..., 1], 1.0)


def corpus_bleu(summed: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0–100) of summed :func:`bleu_stats` rows (sacreBLEU's ``compute_bleu``, "exp")."""
    flat = np.asarray(summed, dtype=float).reshape(-1, 10)
    scores = [BLEU.compute_bleu(correct=[int(x) for x in s[2:6]], total=[int(x) for x in s[6:10]],
                                sys_len=int(s[0]), ref_len=int(s[1]), smooth_method="exp").score for s in flat]
    return np.array(scores).reshape(np.shape(summed)[:-1])


def statistic_for(metric: str) -> Statistic:
    """The corpus statistic of ``metric``'s item stats: :func:`corpus_bleu` for ``bleu``, else :func:`ratio`."""
    return corpus_bleu if metric == "bleu" else ratio


def paired_bootstrap(baseline: np.ndarray, system: np.ndarray, statistic: Statistic = ratio,
                     resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95) -> dict[str, float | bool]:
    """``{"diff", "low", "high", "significant"}`` of ``statistic(system) − statistic(baseline)`` over the
    same items (row ``i`` of both is item ``i``); method in the module docstring."""
    baseline, system = np.asarray(baseline, dtype=float), np.asarray(system, dtype=float)
    if baseline.shape != system.shape or baseline.ndim != 2 or len(baseline) == 0:
        raise ValueError(f"need the same non-empty (items, stats) arrays, got {baseline.shape} and {system.shape}")
    n = len(baseline)
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    diffs = statistic(system[index].sum(axis=1)) - statistic(baseline[index].sum(axis=1))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    diff = float(statistic(system.sum(axis=0)) - statistic(baseline.sum(axis=0)))
    return {"diff": round(diff, 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "significant": bool(low > 0 or high < 0)}


def intervals(items: dict[str, dict[str, Sequence]], baseline: str, systems: Sequence[str],
              seed: int = 0) -> dict[str, dict[str, dict[str, float | bool]]]:
    """``{system: {metric: paired_bootstrap(...)}}`` of each of ``systems`` against ``baseline``, for every
    metric both have item stats of (``items[system][metric]``: one row per test item, same order). A
    system without items, or whose items differ in number from the baseline's, gets no entry."""
    base = items.get(baseline) or {}
    out: dict[str, dict[str, dict[str, float | bool]]] = {}
    for name in systems:
        if name == baseline or name not in items:
            continue
        per_metric = {}
        for metric, stats in items[name].items():
            if metric in base and len(base[metric]) == len(stats) and len(stats):
                per_metric[metric] = paired_bootstrap(np.asarray(base[metric]), np.asarray(stats),
                                                      statistic_for(metric), seed=seed)
        if per_metric:
            out[name] = per_metric
    return out
