"""GRPO, once, for every policy family: the speech trainer (:mod:`speechrl.trainers.grpo`) and the TTS
trainer (:mod:`speechrl.trainers.tts_rl`) say what a rollout is and how it is rewarded; this module
does the rest.

- :class:`GRPOConfig` — the one config block both trainers extend (sampling, group statistics,
  clipping, KL, loss type, μ, schedule, dev selection, checkpoints, LoRA);
- :func:`score_groups` — rewards → missing ones masked (NaN / ±inf: left out of their group's mean and
  std, Â = 0, not trained on), DAPO's soft overlong penalty, group-relative advantages, dynamic
  sampling (zero-variance groups dropped); its logged values are global sums over the ranks, the same
  keys on every rank;
- :func:`rows_to_train` and :func:`train_weight` — the rows a rank trains on and the DDP weight of its
  loss (tokens for the token-mean losses, sequences otherwise);
- :func:`policy_update` — μ updates on the same rollouts: log-probs **at the rollout temperature**
  (logits / T, as TRL), ratios against the rollout policy (exactly 1 in the first iteration), clip /
  clip-higher, k3 KL to the reference, the loss type's normalisation
  (:func:`speechrl.losses.grpo.grpo_loss`), plus an optional extra loss on the same forward (DiffRO);
- :func:`prepare` (optimizer, schedule, accelerate) and :func:`train_loop` — resume from the newest checkpoint, dev selection of the best weights,
  checkpoints, a cached ``result.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import ConfigError, doc
from speechrl.losses.grpo import group_advantages, grpo_loss, soft_overlong_penalty, zero_variance_groups
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.common import make_accelerator, make_optimizer, mean_over_ranks, rank_weight
from speechrl.trainers.lora import LoRAConfig

__all__ = ["GRPOConfig", "check_reward_names", "Groups", "score_groups", "rows_to_train", "train_weight",
           "policy_update", "prepare", "cached_result", "train_loop"]


@dataclass
class GRPOConfig:
    group_size: int = doc("G: samples per prompt", 8, ge=2)
    prompts_per_step: int = doc("B: prompts per step", 4, ge=1)
    max_steps: int = doc("training steps", 60, ge=0)
    lr: float = doc("learning rate (LoRA parameters)", 1e-4, ge=0)
    warmup_steps: int = doc("linear warm-up steps", 0, ge=0)
    temperature: float = doc("rollout temperature T; the update scores the samples at the same T (logits / T)", 1.0,
                             gt=0)
    top_p: float = doc("rollout nucleus mass", 1.0, gt=0, le=1)
    top_k: int = doc("rollout top-k (0: off)", 0, ge=0)
    max_new_tokens: int = doc("rollout completion cap", 40, ge=1)
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = doc("normalisation of the token terms", "grpo")
    scale_rewards: Literal["std", "none"] = doc("group z-score (std) or mean-only (none, Dr. GRPO)", "std")
    epsilon: float = doc("clip ε (ε_low; active when num_iterations > 1)", 0.2, ge=0)
    epsilon_high: float | None = doc("clip-higher ε_high (None: = epsilon)", None, ge=0)
    beta: float = doc("k3 KL weight to the reference (IBM: 0.02; 0: no reference pass)", 0.02, ge=0)
    num_iterations: int = doc("μ: updates per batch of rollouts (ratios against the rollout policy)", 1, ge=1)
    dynamic_sampling: bool = doc("drop groups whose rewards are all equal", True)
    overlong_cache: int = doc("soft overlong penalty window C (0: off)", 0, ge=0)
    eval_every: int = doc("evaluate on dev every N steps (0: only at the end)", 20, ge=0)
    dev_examples: int = doc("dev examples used for model selection (0: no selection, the last weights are the "
                            "result)", 96, ge=0)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 10, ge=1, affects_results=False)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    seed: int = doc("seed for prompt order and sampling", 0)



def check_reward_names(rewards: dict[str, float]) -> None:
    """A GRPO config's ``rewards``: at least one, every name registered (:data:`speechrl.rewards.REWARDS`),
    every weight finite — checked when the config is loaded, not when GRPO starts after SFT."""
    from speechrl.rewards import REWARDS

    if not rewards:
        raise ConfigError(f"rewards: name at least one reward; choose from {sorted(REWARDS)}")
    unknown = sorted(set(rewards) - set(REWARDS))
    if unknown:
        raise ConfigError(f"rewards: unknown reward(s) {unknown}; choose from {sorted(REWARDS)}")
    bad = {k: w for k, w in rewards.items() if not math.isfinite(w)}
    if bad:
        raise ConfigError(f"rewards: weights must be finite numbers, got {bad}")

@dataclass
class Groups:
    """One step's group statistics: ``advantages`` ``[N]`` (0 where the reward is missing), ``keep``
    ``[N]`` bool (the rows to train on), ``metrics`` (global over the ranks)."""

    advantages: Tensor
    keep: Tensor
    metrics: dict[str, float]


def score_groups(rewards: Tensor, lengths: Tensor, cfg: GRPOConfig, accelerator: Any,
                 sampled: Tensor | None = None) -> Groups:
    """Rewards of N = B·G rows (group k = rows k·G … k·G+G−1) → advantages and the rows kept.

    ``lengths``: completion tokens per row (for the soft overlong penalty); ``sampled``: ``[N]`` bool,
    False on rows the policy did not sample (mixed policy's reference row): they take part in the
    group statistics and the update, but not in the logged rollout ``reward``. Logged: ``reward`` (mean
    over the valid sampled rows of all ranks; NaN if none), ``invalid_rewards``, ``kept_samples``,
    ``zero_variance_groups``, ``positive_advantage`` (kept rows with Â > 0) — sums over the ranks.
    """
    g = cfg.group_size
    rewards = rewards.detach().to(torch.float32).cpu()
    if cfg.overlong_cache:
        rewards = rewards + soft_overlong_penalty(lengths.cpu(), cfg.max_new_tokens, cfg.overlong_cache)
    invalid = ~torch.isfinite(rewards)
    rewards = rewards.masked_fill(invalid, math.nan)
    advantages = group_advantages(rewards, g, scale=cfg.scale_rewards)
    zero_variance = zero_variance_groups(rewards, g)
    keep = ~invalid
    if cfg.dynamic_sampling:
        keep &= ~zero_variance.repeat_interleave(g)
    sampled = torch.ones_like(keep) if sampled is None else sampled.cpu().to(torch.bool)
    scored = sampled & ~invalid
    local = torch.tensor([rewards[scored].sum().item(), scored.sum().item(), invalid.sum().item(),
                          keep.sum().item(), zero_variance.sum().item(), (keep & (advantages > 0)).sum().item()],
                         dtype=torch.float64, device=accelerator.device)
    total = accelerator.reduce(local, "sum").tolist()
    metrics = {"reward": total[0] / total[1] if total[1] else math.nan, "invalid_rewards": int(total[2]),
               "kept_samples": int(total[3]), "zero_variance_groups": int(total[4]),
               "positive_advantage": int(total[5])}
    return Groups(advantages, keep, metrics)


def rows_to_train(keep: Tensor) -> Tensor:
    """Indices of the kept rows; a rank that kept none trains on row 0 with weight 0 (so its backward
    still joins DDP's all-reduce: no rank waits forever)."""
    return keep.nonzero().squeeze(1) if keep.any() else torch.zeros(1, dtype=torch.long)


def train_weight(accelerator: Any, loss_type: str, mask: Tensor, any_kept: bool) -> Tensor:
    """The rank's DDP weight (:func:`~speechrl.trainers.common.rank_weight`) for the GRPO loss over the
    rows it trains on: counted in tokens for the token-mean losses (dapo, bnpo), in sequences for the
    per-sequence ones (grpo, dr_grpo); 0 when the rank kept nothing."""
    count = mask.sum() if loss_type in ("dapo", "bnpo") else torch.tensor(float(mask.shape[0]))
    return rank_weight(accelerator, count * float(any_kept))


def policy_update(forward: Callable[[], tuple[Tensor, Any]], optimizer: Any, accelerator: Any, cfg: GRPOConfig, *,
                  advantages: Tensor, mask: Tensor, weight: Tensor, ref_logp: Tensor | None = None,
                  off_policy: Tensor | None = None, policy_gradient: bool = True,
                  extra: Callable[[Any], tuple[Tensor, dict[str, float]]] | None = None) -> tuple[dict[str, float], Tensor]:
    """μ = ``cfg.num_iterations`` updates on the same rollouts; returns (the last iteration's logged
    values, averaged over the ranks; the first iteration's log-probs, detached — the rollout policy's).

    ``forward()`` → ``(logp, aux)``: teacher-forced log-probs ``[n, T]`` of the trained rows at the
    rollout temperature (with grad), and anything an ``extra`` loss needs from the same pass (the TTS
    trainer's logits). Iteration 1 has ratio s ≡ 1 (its log-probs are π_old); later ones take ratios
    against it, clipped to [1 − ε, 1 + ε_high]. ``ref_logp``: the reference's log-probs at the same
    temperature for the k3 KL (None: no KL). ``policy_gradient=False`` leaves the GRPO term out (pure
    DiffRO). ``extra(aux)`` → ``(loss, stats)``, already weighted for DDP, added to the GRPO term.
    """
    old = first = None
    stats: dict[str, float] = {}
    for _ in range(cfg.num_iterations):
        logp, aux = forward()
        loss = logp.new_zeros(())
        stats = {}
        if policy_gradient:
            pg, pg_stats = grpo_loss(logp, old, ref_logp, advantages.to(logp.device), mask, loss_type=cfg.loss_type,
                                     eps_low=cfg.epsilon, eps_high=cfg.epsilon_high, beta=cfg.beta,
                                     max_completion_length=cfg.max_new_tokens, off_policy=off_policy)
            loss = loss + pg * weight
            stats.update(grpo_loss=(pg * weight).item(), **{k: (v * weight).item() for k, v in pg_stats.items()})
        if extra is not None:
            extra_loss, extra_stats = extra(aux)
            loss = loss + extra_loss
            stats.update(extra_stats)
        stats["loss"] = loss.item()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        if first is None:
            first = logp.detach()
            old = first if cfg.num_iterations > 1 else None
    return mean_over_ranks(accelerator, stats), first


def prepare(policy: Any, cfg: GRPOConfig) -> tuple[Any, Any, Any, Any, Any]:
    """``(accelerator, model, policy, optimizer, scheduler)`` for a policy whose trainable parameters
    are set (LoRA added): AdamW at ``cfg.lr`` with the linear warm-up/decay schedule, prepared by
    accelerate (``model`` is what trains — DDP-wrapped under several processes — ``policy`` the module)."""
    trainable = [p for p in policy.parameters() if p.requires_grad]
    accelerator = make_accelerator(cfg.seed)
    optimizer, scheduler = make_optimizer([{"params": trainable, "lr": cfg.lr}], cfg.max_steps, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(policy, optimizer)
    return accelerator, model, accelerator.unwrap_model(model), optimizer, scheduler


def cached_result(out_dir: Path, policy: Any) -> dict[str, Any] | None:
    """A finished run's ``result.json``, with its result weights loaded into ``policy``; None if unfinished."""
    if not (out_dir / "result.json").is_file():
        return None
    checkpoint.load_weights(out_dir / "best" / "model.safetensors", policy)
    return read_json(out_dir / "result.json")


def train_loop(policy: Any, optimizer: Any, scheduler: Any, accelerator: Any, cfg: GRPOConfig, out_dir: Path, *,
               stage: str, step: Callable[[int, dict[str, Any]], dict[str, float]],
               evaluate: Callable[[], tuple[float, dict[str, float]]] | None, logger: MetricsLogger | None = None,
               initial_dev: tuple[float, dict[str, float]] | None = None) -> dict[str, Any]:
    """Setup is the trainer's; this is the loop: resume → dev → ``step`` × ``max_steps`` → result.

    ``step(i, state)`` runs training step i (rollout → reward → update) and returns its logged values
    (``state`` holds ``skipped_steps``/``invalid_rewards`` counters it may update). ``evaluate()`` →
    ``(score, dev metrics)``, higher score better; the best-scoring weights are the result. With
    ``evaluate=None`` (no dev set) the last weights are. ``initial_dev``: step 0's (score, metrics)
    when already known. Checkpoints every ``checkpoint_every`` steps resume bit-identically; a finished
    run's ``result.json`` is returned by :func:`cached_result` on a rerun.
    """
    best_path = out_dir / "best" / "model.safetensors"
    state: dict[str, Any] = {"best_score": None, "best_step": -1, "train_s": 0.0, "skipped_steps": 0,
                             "invalid_rewards": 0, "dev": {}}
    done = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, policy, optimizer, scheduler)
        done, state = restored["step"], restored["state"]

    def evaluate_dev(known: tuple[float, dict[str, float]] | None = None) -> None:
        if evaluate is None:
            return
        score, metrics = known if known is not None else evaluate()
        state["dev"][str(done)] = metrics
        if state["best_score"] is None or score > state["best_score"]:
            state.update(best_score=score, best_step=done)
            checkpoint.save_weights(best_path, policy)
        if logger:
            logger.log({f"dev_{k}": v for k, v in metrics.items()}, step=done, stage=stage)

    if state["best_score"] is None:
        evaluate_dev(initial_dev)
    bar = tqdm(total=cfg.max_steps, initial=done, desc=stage, unit="step")
    while done < cfg.max_steps:
        t0 = time.time()
        metrics = step(done, state)
        state["invalid_rewards"] += metrics.get("invalid_rewards", 0)
        scheduler.step()
        done += 1
        metrics["step_s"] = time.time() - t0
        state["train_s"] += metrics["step_s"]
        bar.update(1)
        bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("reward", "loss") if k in metrics})
        if logger:
            logger.log(metrics, step=done, stage=stage)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.max_steps:
            evaluate_dev()
        if done % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, done, policy, optimizer, scheduler, state)
    bar.close()
    evaluate_dev()
    if evaluate is None:
        checkpoint.save_weights(best_path, policy)  # the last weights are the result (and what a rerun loads)
    accelerator.wait_for_everyone()  # the result weights are on disk before any rank reloads them
    if evaluate is not None and state["best_step"] != done:
        checkpoint.load_weights(best_path, policy)
    result = {"best_score": state["best_score"], "best_step": state["best_step"] if evaluate else done,
              "steps": done, "train_s": round(state["train_s"], 1),
              "step_s": round(state["train_s"] / max(1, done), 3), "skipped_steps": state["skipped_steps"],
              "invalid_rewards": state["invalid_rewards"], "dev": state["dev"]}
    write_json(out_dir / "result.json", result)
    return result
