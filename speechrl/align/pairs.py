"""Preference pairs from scored continuations (Align-SLM, arXiv 2411.01834): one (chosen, rejected) per prompt.

Input: per prompt, its sampled continuations (:class:`Candidate`: transcript, judge score or
``None``, bigram auto-BLEU, perplexity, unit ids), grouped in :class:`PromptCandidates`.

**Judge feedback** (:func:`build_judge_pairs`, thresholds ``s_c``/``s_r``, repetition bound ``δ``):

* *repetitive*: ``auto_bleu > δ``. A repetitive candidate is rejected outright: it can never be
  chosen, it always qualifies as rejected (whatever its score, even unscored), and it ranks as worse
  than any non-repetitive candidate.
* *chosen* qualifies when ``score ≥ s_c`` and not repetitive; *rejected* when ``score ≤ s_r`` or
  repetitive. ``s_c > s_r`` is required, so no candidate qualifies as both.
* chosen = the best qualifying candidate: highest score; ties → lower auto-BLEU, then the earlier
  candidate (lower index).
* rejected = the worst qualifying candidate: repetitive ones first (higher auto-BLEU first), then
  the lowest score; remaining ties → the earlier candidate.

**Perplexity feedback** (:func:`build_ppl_pairs`): chosen = lowest PPL, rejected = highest PPL,
among candidates with a finite PPL; with ``max_auto_bleu`` set, repetitive candidates are never
chosen and rank as the worst (repetitive text tends to have a *low* PPL, which would otherwise make
it the chosen one). Ties → the earlier candidate; equal chosen and rejected PPL → dropped (``tie``).

A prompt without a pair is dropped with one reason, checked in this order: ``too_few`` (fewer than
``min_candidates`` candidates), ``unscored`` (no candidate has a score / a finite PPL, and none is
repetitive), ``no_chosen``, ``no_rejected`` (and ``tie`` for PPL). Every builder returns
``(pairs, stats)``; ``stats`` counts prompts, pairs, candidates, unscored and repetitive candidates,
and the drops by reason.

**Context-contrast pairs** (:func:`context_pairs`, optional, not in the paper): prompts ``0 … n−1``
(long-form stories), each with the policy's continuations ``c_i^0 … c_i^(m−1)`` (no feedback), and a
seeded random cycle ``σ`` over the prompts (``σ(i) ≠ i``): for every ``i`` and ``j``, prompt ``i`` with
``c_i^j`` as *chosen* and ``c_σ(i)^j`` as *rejected* (index −1: not one of this prompt's candidates).
The preference is known by construction: only the chosen side continues *this* prompt, so DPO raises
``log π(c_i | p_i) − log π(c_σ(i) | p_i)`` — continuations that use the context (keep to the story).
With fewer than two prompts there is nothing to contrast: ``[]``.

**Quantile thresholds** (:func:`score_quantiles`): ``s_c``/``s_r`` read off the distribution of a
round's scored, non-repetitive candidates (e.g. chosen ≥ its 75th percentile, rejected ≤ its 25th), for
a judge whose absolute scale does not suit the policy (a weak model rarely earns the rubric's 3).

**Storage**: JSON Lines, one pair per line (:func:`save_pairs`, :func:`load_pairs`), written
atomically. Columns: ``prompt_id, prompt_text, prompt_units, feedback`` and for each side
``chosen_*`` / ``rejected_*``: ``transcript, score, auto_bleu, ppl, units, index``. Non-finite
numbers are stored as ``null``. ``datasets.load_dataset("json", data_files=path)`` reads the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from speechrl.runlog import atomic_write_text

__all__ = [
    "Candidate",
    "PromptCandidates",
    "PreferencePair",
    "DROP_REASONS",
    "build_judge_pairs",
    "build_ppl_pairs",
    "context_pairs",
    "save_pairs",
    "load_pairs",
    "save_candidates",
    "load_candidates",
    "score_quantiles",
]

T = TypeVar("T")
DROP_REASONS = ("too_few", "unscored", "no_chosen", "no_rejected", "tie")


@dataclass
class Candidate:
    """One sampled continuation of a prompt and its feedback.

    transcript: ASR text of the vocoded continuation. score: judge rating 1–5, ``None`` = unscored.
    auto_bleu: bigram auto-BLEU of the transcript. ppl: perplexity of the transcript given the prompt
    transcript (``None`` when not computed). units: the continuation's unit ids (what DPO trains on).
    """

    transcript: str
    score: float | None
    auto_bleu: float
    ppl: float | None = None
    units: list[int] = field(default_factory=list)


@dataclass
class PromptCandidates:
    """A prompt (id, unit ids, transcript) and its sampled continuations, in sampling order."""

    prompt_id: str
    prompt_units: list[int]
    candidates: list[Candidate]
    prompt_text: str = ""


@dataclass
class PreferencePair:
    """The chosen and rejected continuation of one prompt; ``*_index`` is their position in the list."""

    prompt_id: str
    prompt_units: list[int]
    chosen: Candidate
    rejected: Candidate
    chosen_index: int
    rejected_index: int
    feedback: str  # "judge", "ppl" or "context"
    prompt_text: str = ""


def _new_stats(groups: Sequence[PromptCandidates]) -> dict[str, Any]:
    return {"prompts": len(groups), "pairs": 0, "candidates": sum(len(g.candidates) for g in groups),
            "unscored_candidates": 0, "repetitive_candidates": 0,
            "dropped": {reason: 0 for reason in DROP_REASONS}}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _pair(group: PromptCandidates, chosen: int, rejected: int, feedback: str) -> PreferencePair:
    return PreferencePair(group.prompt_id, list(group.prompt_units), group.candidates[chosen],
                          group.candidates[rejected], chosen, rejected, feedback, group.prompt_text)


def build_judge_pairs(groups: Sequence[PromptCandidates], chosen_min: float = 3.0, rejected_max: float = 1.0,
                      max_auto_bleu: float = 0.1, min_candidates: int = 2
                      ) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Judge-feedback pairs: ``chosen_min`` = s_c, ``rejected_max`` = s_r, ``max_auto_bleu`` = δ.

    See the module docstring for the rules, the tie order and the drop reasons.
    """
    if not chosen_min > rejected_max:
        raise ValueError(f"chosen_min (s_c={chosen_min}) must exceed rejected_max (s_r={rejected_max})")
    if not 0.0 <= max_auto_bleu <= 1.0:
        raise ValueError(f"max_auto_bleu (δ) must lie in [0, 1], got {max_auto_bleu}")
    if min_candidates < 2:
        raise ValueError(f"min_candidates must be >= 2 (a pair needs two candidates), got {min_candidates}")
    pairs: list[PreferencePair] = []
    stats = _new_stats(groups)
    for group in groups:
        cands = group.candidates
        repetitive = [c.auto_bleu > max_auto_bleu for c in cands]
        scored = [_finite(c.score) for c in cands]
        stats["unscored_candidates"] += scored.count(False)
        stats["repetitive_candidates"] += sum(repetitive)
        if len(cands) < min_candidates:
            stats["dropped"]["too_few"] += 1
            continue
        if not any(scored) and not any(repetitive):
            stats["dropped"]["unscored"] += 1
            continue
        chosen = [i for i, c in enumerate(cands) if scored[i] and not repetitive[i] and c.score >= chosen_min]
        rejected = [i for i, c in enumerate(cands) if repetitive[i] or (scored[i] and c.score <= rejected_max)]
        if not chosen:
            stats["dropped"]["no_chosen"] += 1
            continue
        if not rejected:
            stats["dropped"]["no_rejected"] += 1
            continue
        best = min(chosen, key=lambda i: (-cands[i].score, cands[i].auto_bleu, i))
        worst = min(rejected, key=lambda i: (0, -cands[i].auto_bleu, i) if repetitive[i]
                    else (1, cands[i].score, i))
        pairs.append(_pair(group, best, worst, "judge"))
    stats["pairs"] = len(pairs)
    return pairs, stats


def build_ppl_pairs(groups: Sequence[PromptCandidates], max_auto_bleu: float | None = 0.1,
                    min_candidates: int = 2) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Perplexity-feedback pairs: chosen = lowest PPL, rejected = highest (module docstring)."""
    if max_auto_bleu is not None and not 0.0 <= max_auto_bleu <= 1.0:
        raise ValueError(f"max_auto_bleu (δ) must lie in [0, 1] or be None, got {max_auto_bleu}")
    if min_candidates < 2:
        raise ValueError(f"min_candidates must be >= 2 (a pair needs two candidates), got {min_candidates}")
    pairs: list[PreferencePair] = []
    stats = _new_stats(groups)
    for group in groups:
        cands = group.candidates
        repetitive = [max_auto_bleu is not None and c.auto_bleu > max_auto_bleu for c in cands]
        scored = [_finite(c.ppl) for c in cands]
        stats["unscored_candidates"] += scored.count(False)
        stats["repetitive_candidates"] += sum(repetitive)
        if len(cands) < min_candidates:
            stats["dropped"]["too_few"] += 1
            continue
        if not any(scored) and not any(repetitive):
            stats["dropped"]["unscored"] += 1
            continue
        chosen = [i for i in range(len(cands)) if scored[i] and not repetitive[i]]
        rejected = [i for i in range(len(cands)) if scored[i] or repetitive[i]]
        if not chosen:
            stats["dropped"]["no_chosen"] += 1
            continue
        best = min(chosen, key=lambda i: (cands[i].ppl, i))
        rejected = [i for i in rejected if i != best]
        if not rejected:
            stats["dropped"]["no_rejected"] += 1
            continue
        worst = min(rejected, key=lambda i: (0, -cands[i].auto_bleu, i) if repetitive[i]
                    else (1, -cands[i].ppl, i))
        if not repetitive[worst] and cands[worst].ppl == cands[best].ppl:
            stats["dropped"]["tie"] += 1
            continue
        pairs.append(_pair(group, best, worst, "ppl"))
    stats["pairs"] = len(pairs)
    return pairs, stats


def context_pairs(groups: Sequence[PromptCandidates], seed: int | Sequence[int] = 0) -> list[PreferencePair]:
    """Context-contrast pairs: prompt ``i``'s ``j``-th continuation vs prompt ``σ(i)``'s, on prompt ``i``
    (module docstring); ``σ`` = one cycle through a ``numpy`` permutation seeded by ``seed``."""
    if len(groups) < 2:
        return []
    order = np.random.default_rng(seed).permutation(len(groups))
    other = dict(zip(order.tolist(), np.roll(order, -1).tolist()))  # each prompt → the next in the cycle
    return [replace(_pair(g, j, j, "context"), rejected=groups[other[i]].candidates[j], rejected_index=-1)
            for i, g in enumerate(groups) for j in range(min(len(g.candidates), len(groups[other[i]].candidates)))]


# ---------------------------------------------------------------------------------------- storage


def _num(x: float | None) -> float | None:
    return float(x) if _finite(x) else None


def _row(pair: PreferencePair) -> dict[str, Any]:
    row: dict[str, Any] = {"prompt_id": pair.prompt_id, "prompt_text": pair.prompt_text,
                           "prompt_units": [int(u) for u in pair.prompt_units], "feedback": pair.feedback}
    for side, cand, index in (("chosen", pair.chosen, pair.chosen_index),
                              ("rejected", pair.rejected, pair.rejected_index)):
        row.update({f"{side}_{k}": v for k, v in _cand_row(cand).items()})
        row[f"{side}_index"] = int(index)
    return row


def save_pairs(pairs: Sequence[PreferencePair], path: str | Path) -> Path:
    """Write ``pairs`` as JSON Lines (columns in the module docstring), atomically."""
    lines = [json.dumps(_row(p), ensure_ascii=False, allow_nan=False) for p in pairs]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def _candidate(row: dict[str, Any], prefix: str = "") -> Candidate:
    bleu = row[f"{prefix}auto_bleu"]
    return Candidate(row[f"{prefix}transcript"], row[f"{prefix}score"], math.nan if bleu is None else bleu,
                     row[f"{prefix}ppl"], list(row[f"{prefix}units"]))


def _read_jsonl(path: str | Path, parse: Callable[[dict[str, Any]], T], what: str) -> list[T]:
    """``parse`` of every non-empty line; a malformed line is a ``ValueError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    items = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(parse(json.loads(line)))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: not {what} ({err})") from None
    return items


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """Read pairs written by :func:`save_pairs`; a malformed line is a ``ValueError`` naming it."""
    return _read_jsonl(path, lambda row: PreferencePair(
        row["prompt_id"], list(row["prompt_units"]), _candidate(row, "chosen_"), _candidate(row, "rejected_"),
        int(row["chosen_index"]), int(row["rejected_index"]), row["feedback"], row.get("prompt_text", "")),
        "a preference pair")

def score_quantiles(groups: Sequence[PromptCandidates], chosen_q: float, rejected_q: float,
                    max_auto_bleu: float = 0.1) -> tuple[float, float]:
    """(s_c, s_r) = the ``chosen_q`` and ``rejected_q`` quantiles of the finite scores of the
    non-repetitive candidates. When the two coincide (tied scores), s_c is nudged just above s_r so
    that ``build_judge_pairs`` accepts them (a chosen candidate then scores strictly above s_r)."""
    if not 0.0 <= rejected_q < chosen_q <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= rejected ({rejected_q}) < chosen ({chosen_q}) <= 1")
    scores = [c.score for g in groups for c in g.candidates if _finite(c.score) and c.auto_bleu <= max_auto_bleu]
    if not scores:
        raise ValueError("no scored, non-repetitive candidate to take score quantiles from")
    scores.sort()
    def q(p: float) -> float:  # linear interpolation between order statistics (numpy's default)
        x = p * (len(scores) - 1)
        lo = int(math.floor(x))
        hi = min(lo + 1, len(scores) - 1)
        return scores[lo] + (scores[hi] - scores[lo]) * (x - lo)
    s_c, s_r = q(chosen_q), q(rejected_q)
    return (s_c if s_c > s_r else math.nextafter(s_r, math.inf)), s_r


def _cand_row(c: Candidate) -> dict[str, Any]:
    return {"transcript": c.transcript, "score": _num(c.score), "auto_bleu": _num(c.auto_bleu), "ppl": _num(c.ppl),
            "units": [int(u) for u in c.units]}


def save_candidates(groups: Sequence[PromptCandidates], path: str | Path) -> Path:
    """Every prompt's scored candidates as JSON Lines (one prompt per line), atomically: a round's
    pairs can be rebuilt with other thresholds without sampling and judging again."""
    lines = [json.dumps({"prompt_id": g.prompt_id, "prompt_text": g.prompt_text,
                         "prompt_units": [int(u) for u in g.prompt_units],
                         "candidates": [_cand_row(c) for c in g.candidates]}, ensure_ascii=False, allow_nan=False)
             for g in groups]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def load_candidates(path: str | Path) -> list[PromptCandidates]:
    """Read groups written by :func:`save_candidates`; a malformed line is a ``ValueError`` naming it."""
    return _read_jsonl(path, lambda row: PromptCandidates(
        row["prompt_id"], list(row["prompt_units"]), [_candidate(c) for c in row["candidates"]], row["prompt_text"]),
        "a prompt's candidates")
