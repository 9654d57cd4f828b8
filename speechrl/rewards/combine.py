"""Weighted combination of rewards, with each reward's values kept for logging.

    total_i = Σ_{k applicable to i} w_k · r_k(sample_i)

A reward returns ``None`` for a sample it has nothing to judge (``keyword_score`` for an example without
keywords; TRL's convention): that reward's term is left out of the sample's total — never a free
constant — and the other terms stand (a sample with no keywords totals its other rewards). A sample
no reward applies to has no total (NaN).

A sample for which any reward gives NaN or ±inf (a failed score: a judge's garbage answer) is
**invalid**: its total is NaN (never a partial sum or an average over the other rewards), and it is
counted in ``last_invalid`` and ``invalid_total``. The trainer masks NaN totals out of the advantage
and the loss.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from speechrl.rewards.asr import accuracy_cer, accuracy_wer, hallucination, keyword_score, tanh_wer
from speechrl.rewards.batch import completion_texts
from speechrl.rewards.embedding import embedding_similarity
from speechrl.rewards.text_metrics import bleu, meteor, rouge1, rouge2, rouge_l

__all__ = ["REWARDS", "WeightedReward", "make_reward"]

RewardFn = Callable[..., Sequence[float]]

REWARDS: dict[str, RewardFn] = {fn.name: fn for fn in (
    bleu, rouge1, rouge2, rouge_l, meteor, accuracy_wer, accuracy_cer, tanh_wer, keyword_score,
    hallucination, embedding_similarity)}
"""Every built-in reward by its ``name``; each has the TRL signature and a ``value_range``."""


class WeightedReward:
    """Σ_k w_k · r_k per sample, TRL signature; each reward's values of the last call are kept.

    ``rewards`` maps a log name to ``(reward_fn, weight)``. After a call:
    - ``last_values[name]``: that reward's raw (unweighted) values, one per sample (NaN where it did
      not apply);
    - ``last_not_applicable[name]``: per sample, True where that reward returned None;
    - ``last_invalid``: per sample, True where the total is NaN (some reward NaN/inf, or none applied);
    - ``invalid_total``: invalid samples over all calls so far;
    - :meth:`metrics`: ``rewards/<name>_mean`` / ``_std`` over the samples it scored, ``<name>_not_applicable``
      (count), the valid totals' mean, and the invalid count, ready for the step log.
    """

    name = "weighted_reward"
    __name__ = "weighted_reward"

    def __init__(self, rewards: Mapping[str, tuple[RewardFn, float]]):
        if not rewards:
            raise ValueError("WeightedReward needs at least one reward")
        self.rewards: dict[str, tuple[RewardFn, float]] = {}
        for name, (fn, weight) in rewards.items():
            if not callable(fn):
                raise TypeError(f"reward {name!r} is not callable")
            if not isinstance(weight, numbers.Real) or not math.isfinite(weight):
                raise ValueError(f"weight of reward {name!r} must be a finite number, "
                                 f"got {weight!r}")
            self.rewards[name] = (fn, float(weight))
        self.last_values: dict[str, list[float]] = {}
        self.last_not_applicable: dict[str, list[bool]] = {}
        self.last_total: list[float] = []
        self.last_invalid: list[bool] = []
        self.invalid_total = 0

    @property
    def weights(self) -> dict[str, float]:
        return {name: weight for name, (_, weight) in self.rewards.items()}

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 **columns: Any) -> list[float]:
        n = len(completion_texts(completions))
        total = np.zeros(n)
        invalid = np.zeros(n, dtype=bool)
        applied = np.zeros(n, dtype=bool)
        values: dict[str, list[float]] = {}
        not_applicable: dict[str, list[bool]] = {}
        for name, (fn, weight) in self.rewards.items():
            out = list(fn(prompts=prompts, completions=completions, **columns))
            if len(out) != n:
                raise ValueError(f"reward {name!r} returned {len(out)} values for {n} completions")
            skip = np.array([v is None for v in out], dtype=bool)
            arr = np.array([math.nan if v is None else float(v) for v in out], dtype=np.float64)
            invalid |= ~skip & ~np.isfinite(arr)
            applied |= ~skip
            total += weight * np.where(np.isfinite(arr), arr, 0.0)
            values[name], not_applicable[name] = arr.tolist(), skip.tolist()
        invalid |= ~applied
        total[invalid] = math.nan
        self.last_values, self.last_not_applicable, self.last_total = values, not_applicable, total.tolist()
        self.last_invalid = invalid.tolist()
        self.invalid_total += int(invalid.sum())
        return self.last_total

    def metrics(self, prefix: str = "rewards/") -> dict[str, float]:
        """Means/stds of the last call per reward (finite values only) and of the valid totals; how many
        samples each reward did not apply to."""
        out: dict[str, float] = {f"{prefix}{name}_not_applicable": float(sum(skip))
                                 for name, skip in self.last_not_applicable.items()}
        series = {**self.last_values, "total": self.last_total}
        for name, vals in series.items():
            arr = np.asarray(vals, dtype=np.float64)
            arr = arr[np.isfinite(arr)]
            out[f"{prefix}{name}_mean"] = float(arr.mean()) if arr.size else math.nan
            out[f"{prefix}{name}_std"] = float(arr.std()) if arr.size else math.nan
        out[f"{prefix}invalid_count"] = float(sum(self.last_invalid))
        return out


def make_reward(spec: Mapping[str, float]) -> WeightedReward:
    """A :class:`WeightedReward` from built-in reward names → weights, e.g.
    ``make_reward({"accuracy_wer": 1.0, "hallucination": 1.0, "keyword_score": 0.5})``."""
    unknown = sorted(set(spec) - set(REWARDS))
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; allowed: {sorted(REWARDS)}")
    return WeightedReward({name: (REWARDS[name], weight) for name, weight in spec.items()})
