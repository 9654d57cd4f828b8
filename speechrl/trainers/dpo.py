"""LoRA-DPO of a unit LM on preference pairs (Align-SLM, arXiv 2411.01834).

A pair is ``(prompt units, chosen units, rejected units)``. One step:

1. **policy** log-probs log πθ(y|x) of the chosen and rejected continuations (continuation tokens
   only, prompt masked) — one forward over the 2B rows;
2. **reference** log-probs from the same model with the LoRA adapter switched off (no second copy),
   once per batch, without gradients;
3. :func:`speechrl.losses.dpo.dpo_loss` → backward; reward accuracy and margin
   (:func:`~speechrl.losses.dpo.dpo_metrics`) logged every step.

Dev reward accuracy every ``eval_every`` steps picks the checkpoint (as the paper does; ties go to
the lower dev loss), or with ``select: loss`` the dev loss alone; the best adapter weights are kept in
``<out>/best``. Checkpoints every ``checkpoint_every`` steps make the run resumable, and a finished run
(``result.json``) is reused.

**Curriculum rounds keep training the same adapter.** Called on a model that already carries a
LoRA adapter (the previous round's), ``train_dpo`` does not add a new one: it continues from the
current policy, with a fresh optimizer in the new ``out_dir``, and the reference stays the adapter-off
model — the frozen base (TWIST), as in the paper ("train again from the current model", reference =
frozen TWIST). Merging the adapter and adding a fresh one would instead move the reference to the
previous round's policy. Pass ``warmup_steps=0`` for later rounds (the paper uses no warm-up there).
With ``lora.r = 0`` the whole LM trains and the reference is a frozen copy.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.losses.dpo import dpo_loss, dpo_metrics
from speechrl.models.unit_lm import UnitLM
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.common import make_accelerator, make_optimizer, mean_over_ranks, rank_batch
from speechrl.trainers.lora import LoRAConfig, add_lora, reference_policy

Pair = tuple[Sequence[int], Sequence[int], Sequence[int]]  # (prompt, chosen, rejected) unit ids


@dataclass
class DPOConfig:
    beta: float = doc("DPO β (unpublished in the paper; 0.1 is the common default)", 0.1, gt=0)
    label_smoothing: float = doc("conservative-DPO ε: the label is assumed flipped with this probability", 0.0, ge=0,
                                 le=0.5)
    nll_weight: float = doc("α: weight of the chosen continuation's per-unit NLL added to the loss (RPO; TRL's "
                            "rpo_alpha); keeps DPO from pushing both sides down into degenerate output", 0.0, ge=0)
    lr: float = doc("learning rate of the LoRA parameters (paper: 1e-6 at batch 512 on TWIST-1.3B)", 5e-5, ge=0)
    batch_size: int = doc("pairs per optimizer step (paper: 512)", 16, ge=1)
    micro_batch_size: int = doc("pairs per forward/backward; gradients accumulate to batch_size (0: all)", 0, ge=0)
    max_steps: int = doc("optimizer steps (ignored when epochs > 0)", 200, ge=0)
    epochs: float = doc("if > 0: train this many passes over the pairs instead of max_steps", 0.0, ge=0)
    warmup_steps: int = doc("linear warm-up steps, then linear decay (paper: 500; later rounds: 0)", 0, ge=0)
    eval_every: int = doc("dev reward accuracy every N steps (and at the end)", 20, ge=1)
    dev_pairs: int = doc("dev pairs used for checkpoint selection (0: all)", 0, ge=0)
    select: Literal["reward_accuracy", "loss"] = doc(
        "what picks the checkpoint on the dev pairs: reward accuracy (the paper's; ties → lower loss), or the "
        "loss alone — smoother, and not saturated in a later round whose start already ranks most pairs right",
        "reward_accuracy")
    eval_batch_size: int = doc("pairs per forward in dev evaluation", 32, ge=1)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 20, ge=1, affects_results=False)
    time_budget_s: float = doc("stop after this many seconds of training (0: no budget)", 0.0, ge=0)
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=32, alpha=8))
    seed: int = doc("seed for pair order and LoRA initialisation", 0)


def total_steps(cfg: DPOConfig, num_pairs: int) -> int:
    """``max_steps``, or ``epochs`` passes of ``num_pairs // batch_size`` steps (see batch_indices)."""
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * max(1, num_pairs // cfg.batch_size)))
    return cfg.max_steps


def prepare_policy(unit_lm: UnitLM, lora: LoRAConfig) -> None:
    """Make the LoRA adapter the only trainable part: add one, or keep the one already there
    (a later curriculum round continues it; the adapter-off model stays the reference)."""
    if hasattr(unit_lm.lm, "disable_adapter"):
        for name, p in unit_lm.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        add_lora(unit_lm, lora)


def pair_logps(unit_lm: UnitLM, pairs: Sequence[Pair], model: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of the chosen and rejected continuations: one forward over N rows, each prompt
    computed once for both (:meth:`~speechrl.models.unit_lm.UnitLM.branch_logps`)."""
    logps = unit_lm.branch_logps([p for p, _, _ in pairs], [(c, r) for _, c, r in pairs], model)
    return logps[:, 0], logps[:, 1]


def reference_logps(unit_lm: UnitLM, ref: UnitLM | None, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs without gradients: the adapter switched off, or the frozen copy ``ref``."""
    with torch.no_grad():
        if ref is not None:
            return pair_logps(ref, pairs)
        with unit_lm.lm.disable_adapter():
            return pair_logps(unit_lm, pairs)


def pair_loss(pol: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor], pairs: Sequence[Pair],
              cfg: DPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`dpo_loss` of ``cfg`` on the (chosen, rejected) log-probs of ``pairs``."""
    tokens = torch.tensor([len(c) for _, c, _ in pairs], dtype=pol[0].dtype, device=pol[0].device)
    return dpo_loss(*pol, *ref, cfg.beta, cfg.label_smoothing, cfg.nll_weight, tokens)


@torch.no_grad()
def evaluate_pairs(unit_lm: UnitLM, pairs: Sequence[Pair], cfg: DPOConfig, ref: UnitLM | None = None
                   ) -> dict[str, float]:
    """DPO loss, reward accuracy and margin of ``unit_lm`` (vs its reference) on ``pairs``."""
    was_training = unit_lm.training
    unit_lm.eval()
    chosen, rejected, losses = [], [], []
    for start in range(0, len(pairs), cfg.eval_batch_size):
        chunk = pairs[start:start + cfg.eval_batch_size]
        loss, c, r = pair_loss(pair_logps(unit_lm, chunk), reference_logps(unit_lm, ref, chunk), chunk, cfg)
        chosen.append(c)
        rejected.append(r)
        losses.append(loss * len(chunk))
    unit_lm.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)
    metrics = {k: v.item() for k, v in dpo_metrics(c, r).items()}
    return {"loss": (sum(losses) / len(pairs)).item(), **metrics}


def train_dpo(unit_lm: UnitLM, train_pairs: Sequence[Pair], dev_pairs: Sequence[Pair], cfg: DPOConfig,
              out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "dpo") -> dict[str, Any]:
    """DPO on ``unit_lm`` in place (LoRA added unless one is there); returns ``{best_reward_accuracy,
    best_dev_loss, best_step, steps, train_s}``. Resumable; a finished run is reused."""
    out_dir = Path(out_dir)
    best_path = out_dir / "best" / "model.safetensors"
    accelerator = make_accelerator(cfg.seed)  # seeds the LoRA initialisation too
    prepare_policy(unit_lm, cfg.lora)
    if (out_dir / "result.json").is_file():
        checkpoint.load_weights(best_path, unit_lm)
        return read_json(out_dir / "result.json")
    if not train_pairs:
        raise ValueError("no training pairs")
    dev = list(dev_pairs[: cfg.dev_pairs] if cfg.dev_pairs else dev_pairs)
    max_steps = total_steps(cfg, len(train_pairs))
    ref = reference_policy(unit_lm)  # None with an adapter: the reference is the adapter-off model
    trainable = [p for p in unit_lm.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer([{"params": trainable, "lr": cfg.lr}], max_steps, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(unit_lm, optimizer)
    unit_lm = accelerator.unwrap_model(model)
    state: dict[str, Any] = {"best_reward_accuracy": None, "best_dev_loss": None, "best_step": -1,
                             "evaluated_step": -1, "train_s": 0.0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, unit_lm, optimizer, scheduler)
        step, state = restored["step"], restored["state"]

    def evaluate_dev() -> None:
        state["evaluated_step"] = step
        if not dev:
            return
        m = evaluate_pairs(unit_lm, dev, cfg, ref)
        key = (lambda r: (-r["loss"],)) if cfg.select == "loss" else (lambda r: (r["reward_accuracy"], -r["loss"]))
        best = {"reward_accuracy": state["best_reward_accuracy"], "loss": state["best_dev_loss"]}
        if best["loss"] is None or key(m) > key(best):
            state.update(best_reward_accuracy=m["reward_accuracy"], best_dev_loss=m["loss"], best_step=step)
            checkpoint.save_weights(best_path, unit_lm)
        if logger:
            logger.log({f"dev_{k}": v for k, v in m.items()}, step=step, stage=stage)

    if state["evaluated_step"] < 0:
        evaluate_dev()  # the starting point competes too (a later round must not end worse)
    micro = cfg.micro_batch_size or cfg.batch_size
    bar = tqdm(total=max_steps, initial=step, desc=stage, unit="step")
    unit_lm.train()
    while step < max_steps:
        if cfg.time_budget_s and state["train_s"] >= cfg.time_budget_s:
            break
        t0 = time.time()
        batch = rank_batch(train_pairs, step, cfg.batch_size, cfg.seed)  # equal shares: DDP's mean is global
        loss_sum, chosen, rejected = 0.0, [], []
        for start in range(0, len(batch), micro):
            chunk = batch[start:start + micro]
            ref_lp = reference_logps(unit_lm, ref, chunk)
            loss, c, r = pair_loss(pair_logps(unit_lm, chunk, model), ref_lp, chunk, cfg)
            accelerator.backward(loss * (len(chunk) / len(batch)))  # the mean over the whole batch
            loss_sum += loss.item() * len(chunk)
            chosen.append(c)
            rejected.append(r)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        step_s = time.time() - t0
        state["train_s"] += step_s
        c, r = torch.cat(chosen), torch.cat(rejected)
        metrics = mean_over_ranks(accelerator, {
            "loss": loss_sum / len(batch), **{k: v.item() for k, v in dpo_metrics(c, r).items()},
            "chosen_reward": c.mean().item(), "rejected_reward": r.mean().item()})
        metrics.update(lr=scheduler.get_last_lr()[-1], step_s=step_s)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['reward_accuracy']:.2f}")
        if logger:
            logger.log(metrics, step=step, stage=stage)
        if step % cfg.eval_every == 0 or step == max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, unit_lm, optimizer, scheduler, state)
    bar.close()
    if state["evaluated_step"] != step:
        evaluate_dev()  # stopped by the time budget between evaluations: the last weights compete
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if not dev:  # nothing to select on: the last weights are the result
        state["best_step"] = step
        checkpoint.save_weights(best_path, unit_lm)
    elif state["best_step"] != step:
        checkpoint.load_weights(best_path, unit_lm)
    result = {"best_reward_accuracy": state["best_reward_accuracy"], "best_dev_loss": state["best_dev_loss"],
              "best_step": state["best_step"], "steps": step, "train_s": round(state["train_s"], 1)}
    write_json(out_dir / "result.json", result)
    return result
