"""Supervised fine-tuning of a speech policy, trained to its best dev score (the RL baseline).

setup → loop (NLL of the reference completion; dev evaluation every ``eval_every`` steps, best
weights kept in ``<out>/best``, early stop after ``patience`` evaluations without improvement, or a
wall-time budget) → restore the best weights. Checkpoints every ``checkpoint_every`` steps make the
run resumable: a restarted call continues from the latest one.

Under ``accelerate launch`` each rank takes its share of every global batch (``batch_size`` examples
in all), the rank's token-mean NLL is weighted by :func:`~speechrl.trainers.common.rank_weight` (DDP's
gradient average then equals the global batch's token mean), logged values are reduced over the
ranks, every rank evaluates the same dev set (same model selection everywhere), and rank 0 alone writes
checkpoints and the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.data.tasks import Example
from speechrl.eval.speech_tasks import evaluate, prompt_batch, score
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.common import (make_accelerator, make_optimizer, mean_over_ranks, rank_batch, rank_weight,
                                     reference_tokens)


@dataclass
class SFTConfig:
    lr: float = doc("learning rate of the language model", 1e-4)
    front_end_lr: float = doc("learning rate of the audio front end (trained from scratch)", 1e-3)
    batch_size: int = doc("examples per step", 16)
    max_steps: int = doc("upper bound on steps", 1500)
    warmup_steps: int = doc("linear warm-up steps", 30)
    weight_decay: float = doc("AdamW weight decay", 0.0)
    eval_every: int = doc("evaluate on dev every N steps", 100)
    patience: int = doc("stop after this many dev evaluations without improvement", 3)
    dev_examples: int = doc("dev examples used for model selection", 96)
    max_new_tokens: int = doc("completion length cap (decoding and targets)", 40)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 100)
    time_budget_s: float = doc("stop after this many seconds of training (0: no budget)", 0.0)
    train_embeddings: bool = doc("also train the (tied) token embeddings; off is 2× faster on CPU", False)
    seed: int = doc("seed for batch order and initialisation", 0)


def sft_nll(model: Any, policy: Any, examples: list[Example], feats: dict, max_tokens: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, number) of the reference answers' completion tokens. ``model`` is ``policy`` as
    prepared by accelerate (its forward is ``completion_logps``); ``policy`` the unwrapped module."""
    ids, mask = reference_tokens(policy.tokenizer, [e.reference for e in examples], policy.eos_token_id, max_tokens)
    ids, mask = ids.to(policy.lm.device), mask.to(policy.lm.device)
    logps = model(policy.encode(prompt_batch(examples, feats)), ids, mask)
    return -(logps * mask).sum(), mask.sum()


def train_sft(policy: Any, train: list[Example], dev: list[Example], feats: dict, task: str, cfg: SFTConfig,
              out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "sft") -> dict[str, Any]:
    """Train ``policy`` in place; returns ``{best_score, best_step, steps, train_s}``. Resumable."""
    out_dir = Path(out_dir)
    if (out_dir / "result.json").is_file():  # finished before: reuse (the stage is cached)
        checkpoint.load_weights(out_dir / "best" / "model.safetensors", policy)
        return read_json(out_dir / "result.json")
    accelerator = make_accelerator(cfg.seed)
    dev = dev[: cfg.dev_examples]
    policy.lm.get_input_embeddings().requires_grad_(cfg.train_embeddings)
    front = [p for p in policy.front_end.parameters() if p.requires_grad]
    lm = [p for p in policy.lm.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer([{"params": front, "lr": cfg.front_end_lr}, {"params": lm, "lr": cfg.lr}],
                                          cfg.max_steps, cfg.warmup_steps, cfg.weight_decay)
    model, optimizer = accelerator.prepare(policy, optimizer)
    policy = accelerator.unwrap_model(model)
    state = {"best_score": None, "best_step": -1, "bad_evals": 0, "train_s": 0.0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, policy, optimizer, scheduler)
        step, state = restored["step"], restored["state"]
    best_path = out_dir / "best" / "model.safetensors"

    def evaluate_dev() -> float:
        metrics, _ = evaluate(policy, dev, feats, task, cfg.max_new_tokens, semantic=False, desc=f"{stage} dev")
        s = score(task, metrics)
        if state["best_score"] is None or s > state["best_score"]:
            state.update(best_score=s, best_step=step, bad_evals=0)
            checkpoint.save_weights(best_path, policy)
        else:
            state["bad_evals"] += 1
        if logger:
            logger.log({f"dev_{k}": v for k, v in metrics.items()}, step=step, stage=stage)
        return s

    if state["best_score"] is None:
        evaluate_dev()  # the starting point competes too (matters for continued training)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, unit="step")
    policy.train()
    while step < cfg.max_steps and state["bad_evals"] < cfg.patience:
        if cfg.time_budget_s and state["train_s"] >= cfg.time_budget_s:
            break
        t0 = time.time()
        batch = rank_batch(train, step, cfg.batch_size, cfg.seed)
        nll, tokens = sft_nll(model, policy, batch, feats, cfg.max_new_tokens)
        loss = nll / tokens * rank_weight(accelerator, tokens)
        accelerator.backward(loss)
        logged = mean_over_ranks(accelerator, {"loss": loss.item(), "tokens": tokens.item()})
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        state["train_s"] += time.time() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if logger:
            logger.log({"loss": logged["loss"], "tokens": round(logged["tokens"] * accelerator.num_processes),
                        "step_s": time.time() - t0, "lr": scheduler.get_last_lr()[-1]}, step=step, stage=stage)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, policy, optimizer, scheduler, state)
    bar.close()
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if state["best_step"] != step and best_path.is_file():
        checkpoint.load_weights(best_path, policy)
    result = {"best_score": state["best_score"], "best_step": state["best_step"], "steps": step,
              "train_s": round(state["train_s"], 1)}
    write_json(out_dir / "result.json", result)
    return result
