"""Next-unit pretraining of a :class:`~speechrl.models.unit_lm.UnitLM` (TWIST's recipe, small): mean
NLL per unit of a batch of unit sequences, model selection on dev NLL — the loop is
:func:`speechrl.trainers.sft.train_supervised` (resumable; a restarted call sees exactly the batches an
uninterrupted run would).

The same function is the Align-SLM paper's *continued next-token prediction* control: call it on an
already trained unit LM with a ``time_budget_s`` equal to the DPO run's wall time.

Sequences longer than ``max_tokens`` tokens are cut into consecutive chunks, each trained as its own
``[BOS] + units`` segment (TWIST also trains on fixed-length segments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from speechrl.eval.metrics import selection_score
from speechrl.models.unit_lm import UnitLM
from speechrl.runlog import MetricsLogger
from speechrl.trainers.sft import SFTConfig, train_supervised


def pretrain_config(**overrides: Any) -> SFTConfig:
    """:class:`SFTConfig` with next-unit pretraining's defaults: one learning rate for the whole warm-started
    LM (peak 3e-4, 20 warm-up steps, linear decay to 0 at ``max_steps``), 8 sequences of ≤ 256 tokens a
    step, dev NLL every 100 steps on ≤ 256 sequences, no early stop."""
    return SFTConfig(**{"lr": 3e-4, "batch_size": 8, "max_steps": 1000, "max_tokens": 256, "warmup_steps": 20,
                        "eval_every": 100, "dev_examples": 256, "patience": 0, **overrides})


def corpus_sequences(features: dict[str, dict[str, Any]], ids: Iterable[str]) -> list[list[int]]:
    """Deduplicated unit sequences (TWIST removes repeats) of cached corpus features
    (:func:`speechrl.data.features.features` with kind ``units``); ids without features are skipped."""
    from speechrl.speech.units import Units, dedup

    out = []
    for uid in ids:
        if uid in features:
            f = features[uid]
            out.append(dedup(Units(f["ids"].tolist(), f["durations"].tolist())).ids)
    return out


def chunk_sequences(seqs: Sequence[Sequence[int]], max_units: int) -> list[list[int]]:
    """Cut each sequence into consecutive pieces of at most ``max_units`` units (empty ones dropped)."""
    return [list(s[i:i + max_units]) for s in seqs for i in range(0, len(s), max_units)]


def mean_nll(model: UnitLM, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> float:
    """NLL per scored unit over ``seqs`` (nats), the dev metric."""
    scored = model.nll(seqs, batch_size)
    return sum(t for t, _ in scored) / max(1, sum(n for _, n in scored))


def unit_lm_loss(model: torch.nn.Module, unit_lm: UnitLM, batch: Sequence[Sequence[int]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL per unit of ``batch``, number of units scored); every unit is scored; ``model`` is
    ``unit_lm`` as prepared by accelerate. The sequences are packed without padding into rows as wide as the
    longest (:meth:`~speechrl.models.unit_lm.UnitLM.pack_rows`: the same loss over fewer tokens; wider rows
    packed worse: benchmarks/unit_lm_packing.py)."""
    ids, positions, score = unit_lm.pack_rows(batch)
    logps, mask = unit_lm.token_logps(ids, None, score, model, positions)
    return -(logps * mask).sum() / mask.sum().clamp(min=1), mask.sum()


def train_unit_lm(unit_lm: UnitLM, train_seqs: Sequence[Sequence[int]], dev_seqs: Sequence[Sequence[int]],
                  cfg: SFTConfig, out_dir: str | Path, logger: MetricsLogger | None = None,
                  stage: str = "unit_lm",
                  dev_metrics: Callable[[UnitLM], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train ``unit_lm`` in place (all its trainable parameters at ``cfg.lr``); returns
    :func:`~speechrl.trainers.sft.train_supervised`'s result (scores are −dev NLL per unit).
    ``dev_metrics(unit_lm)``: more metrics logged at each dev evaluation (selection stays on the NLL)."""
    train = chunk_sequences(train_seqs, cfg.max_tokens - int(unit_lm.bos_id is not None))
    if not train:
        raise ValueError("no training sequences")

    def loss(model: torch.nn.Module, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return unit_lm_loss(model, unit_lm, batch)

    def dev_score(_model: torch.nn.Module, dev: Sequence[Sequence[int]]) -> tuple[float, dict[str, float]]:
        metrics = {"nll": mean_nll(unit_lm, dev), **(dev_metrics(unit_lm) if dev_metrics else {})}
        return selection_score("nll", metrics), metrics

    return train_supervised(unit_lm, train, list(dev_seqs), loss, [], cfg, out_dir, logger, stage, dev_score)
