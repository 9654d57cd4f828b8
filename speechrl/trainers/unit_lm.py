"""Next-unit pretraining of a :class:`~speechrl.models.unit_lm.UnitLM` (TWIST's recipe, small).

setup → loop (mean NLL per unit of a batch of unit sequences; dev NLL every ``eval_every`` steps,
the best weights kept in ``<out>/best``) → restore the best weights. Checkpoints every
``checkpoint_every`` steps make the run resumable: a restarted call continues from the latest one
and sees exactly the batches an uninterrupted run would.

The same function is the Align-SLM paper's *continued next-token prediction* control: call it on an
already trained unit LM with a ``time_budget_s`` equal to the DPO run's wall time.

Sequences longer than ``seq_len`` tokens are cut into consecutive chunks, each trained as its own
``[BOS] + units`` segment (TWIST also trains on fixed-length segments).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.models.unit_lm import UnitLM
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.common import make_accelerator, make_optimizer, mean_over_ranks, rank_batch, rank_weight


@dataclass
class UnitLMConfig:
    lr: float = doc("peak learning rate (linear warm-up, then linear decay to 0 at max_steps)", 3e-4)
    batch_size: int = doc("sequences per step", 8)
    max_steps: int = doc("upper bound on steps", 1000)
    seq_len: int = doc("tokens per training sequence (BOS included); longer ones are cut into chunks", 256)
    warmup_steps: int = doc("linear warm-up steps", 20)
    weight_decay: float = doc("AdamW weight decay", 0.0)
    eval_every: int = doc("dev NLL every N steps (and at the end)", 100)
    dev_sequences: int = doc("dev sequences used for model selection (0: all)", 256)
    patience: int = doc("stop after this many dev evaluations without improvement (0: never)", 0)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 100)
    time_budget_s: float = doc("stop after this many seconds of training (0: no budget)", 0.0)
    seed: int = doc("seed for batch order", 0)


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
    ``unit_lm`` as prepared by accelerate."""
    ids, attn, score = unit_lm.pack([[] for _ in batch], batch)
    logps, mask = unit_lm.token_logps(ids, attn, score, model)
    return -(logps * mask).sum() / mask.sum().clamp(min=1), mask.sum()


def train_unit_lm(unit_lm: UnitLM, train_seqs: Sequence[Sequence[int]], dev_seqs: Sequence[Sequence[int]],
                  cfg: UnitLMConfig, out_dir: str | Path, logger: MetricsLogger | None = None,
                  stage: str = "unit_lm") -> dict[str, Any]:
    """Train ``unit_lm`` in place (its trainable parameters); returns ``{best_dev_nll, start_dev_nll,
    best_step, steps, train_s}``. Resumable; a finished run (``result.json``) is reused."""
    out_dir = Path(out_dir)
    best_path = out_dir / "best" / "model.safetensors"
    if (out_dir / "result.json").is_file():
        checkpoint.load_weights(best_path, unit_lm)
        return read_json(out_dir / "result.json")
    train = chunk_sequences(train_seqs, cfg.seq_len - int(unit_lm.bos_id is not None))
    if not train:
        raise ValueError("no training sequences")
    dev = list(dev_seqs[: cfg.dev_sequences] if cfg.dev_sequences else dev_seqs)
    accelerator = make_accelerator(cfg.seed)
    params = [p for p in unit_lm.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer([{"params": params, "lr": cfg.lr}], cfg.max_steps, cfg.warmup_steps,
                                          cfg.weight_decay)
    model, optimizer = accelerator.prepare(unit_lm, optimizer)
    unit_lm = accelerator.unwrap_model(model)
    state: dict[str, Any] = {"best_dev_nll": None, "start_dev_nll": None, "best_step": -1, "bad_evals": 0,
                             "evaluated_step": -1, "train_s": 0.0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, unit_lm, optimizer, scheduler)
        step, state = restored["step"], restored["state"]

    def evaluate_dev() -> None:
        if not dev:
            return
        nll = mean_nll(unit_lm, dev)
        state["evaluated_step"] = step
        if state["start_dev_nll"] is None:
            state["start_dev_nll"] = nll
        if state["best_dev_nll"] is None or nll < state["best_dev_nll"]:
            state.update(best_dev_nll=nll, best_step=step, bad_evals=0)
            checkpoint.save_weights(best_path, unit_lm)
        else:
            state["bad_evals"] += 1
        if logger:
            logger.log({"dev_nll": nll}, step=step, stage=stage)

    if state["best_dev_nll"] is None:
        evaluate_dev()  # the starting point competes too (continued training must not make it worse)
    # a time-budgeted run (max_steps only a cap) shows its count and rate, not an ETA for the cap
    bar = tqdm(total=None if cfg.time_budget_s else cfg.max_steps, initial=step, desc=stage, unit="step")
    unit_lm.train()
    while step < cfg.max_steps and not (cfg.patience and state["bad_evals"] >= cfg.patience):
        if cfg.time_budget_s and state["train_s"] >= cfg.time_budget_s:
            break
        t0 = time.time()
        batch = rank_batch(train, step, cfg.batch_size, cfg.seed)
        loss, units = unit_lm_loss(model, unit_lm, batch)
        weight = rank_weight(accelerator, units)
        accelerator.backward(loss * weight)
        logged = mean_over_ranks(accelerator, {"loss": (loss * weight).item(),
                                               "tokens": float(sum(len(s) for s in batch))})
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        step_s = time.time() - t0
        state["train_s"] += step_s
        bar.update(1)
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if logger:
            logger.log({"loss": logged["loss"], "lr": scheduler.get_last_lr()[-1], "step_s": step_s,
                        "tokens": round(logged["tokens"] * accelerator.num_processes)}, step=step, stage=stage)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, unit_lm, optimizer, scheduler, state)
    bar.close()
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if dev:
        if state["evaluated_step"] != step:
            evaluate_dev()  # stopped by the budget between evaluations: the last weights compete
        if state["best_step"] != step:
            checkpoint.load_weights(best_path, unit_lm)
    else:  # nothing to select on: the last weights are the result
        state["best_step"] = step
        checkpoint.save_weights(best_path, unit_lm)
    result = {"best_dev_nll": state["best_dev_nll"], "start_dev_nll": state["start_dev_nll"],
              "best_step": state["best_step"], "steps": step, "train_s": round(state["train_s"], 1)}
    write_json(out_dir / "result.json", result)
    return result
