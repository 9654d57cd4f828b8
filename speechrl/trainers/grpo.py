"""GRPO for speech policies (IBM speech GRPO; Tongyi ASR rewards), with mixed-policy GRPO.

One step reads like the method:

1. **encode** the B prompts' audio once (frozen front end: the time-shared schedule's encoder stage);
2. **rollout** G samples per prompt from the repeated encoding (``mixed_policy``: G−1 samples plus
   the ground-truth reference as an off-policy sample);
3. **reward** every completion (weighted rewards, each logged; a NaN reward masks its sample);
4. **advantages** per group (z-score or mean-only), zero-variance groups dropped (dynamic sampling);
5. **update** μ times: teacher-forced log-probs → :func:`speechrl.losses.grpo.grpo_loss` with the
   k3 KL to the reference policy (the LoRA adapter switched off).

The LM is trained through a LoRA adapter on top of the SFT weights, which are the reference.
Checkpoints every ``checkpoint_every`` steps make the run resumable.

Under ``accelerate launch`` each rank rolls out its share of the B prompts (whole groups, so the
advantages stay local); each rank's loss is weighted by :func:`~speechrl.trainers.common.rank_weight`
over the samples (or tokens, for dapo/bnpo) it trains on, a step is skipped only when no rank kept a
sample, a rank that kept none still runs a zero-weight backward (no all-reduce waits forever), logged
values are reduced over the ranks, and rank 0 alone writes checkpoints and the log.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.data.tasks import Example, reward_columns
from speechrl.eval.speech_tasks import evaluate, prompt_batch, score
from speechrl.losses.grpo import group_advantages, grpo_loss, soft_overlong_penalty, zero_variance_groups
from speechrl.models.policy import completion_mask, decode, pad_completions
from speechrl.rewards import make_reward
from speechrl.rewards.service import RemoteReward
from speechrl.rollout import Engine, VLLMConfig, logp_parity, make_engine
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.schedule import TimeShared, audio_encoder
from speechrl.trainers.common import (make_accelerator, make_optimizer,
                                     mean_over_ranks, rank_batch, rank_weight, reference_tokens)


@dataclass
class LoRAConfig:
    r: int = doc("LoRA rank (0: train the full LM)", 16)
    alpha: int = doc("LoRA alpha", 32)
    dropout: float = doc("LoRA dropout", 0.0)
    target_modules: list[str] = doc("module names LoRA wraps", default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class GRPOConfig:
    rewards: dict[str, float] = doc("reward name → weight (see speechrl.rewards.REWARDS)",
                                    default_factory=lambda: {"bleu": 1.0})
    reward_url: str = doc("score with a reward service at this URL instead of in-process (python -m "
                          "speechrl.rewards.service; unreachable batches become missing rewards)", "")
    group_size: int = doc("G: samples per prompt", 8)
    prompts_per_step: int = doc("B: prompts per step", 4)
    max_steps: int = doc("training steps", 60)
    lr: float = doc("learning rate (LoRA parameters)", 1e-4)
    warmup_steps: int = doc("linear warm-up steps", 0)
    temperature: float = doc("rollout temperature", 1.0)
    top_p: float = doc("rollout nucleus mass", 1.0)
    max_new_tokens: int = doc("rollout completion cap", 40)
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = doc("normalisation of the token terms", "grpo")
    scale_rewards: Literal["std", "none"] = doc("group z-score (std) or mean-only (none, Dr. GRPO)", "std")
    epsilon: float = doc("clip ε (ε_low)", 0.2)
    epsilon_high: float | None = doc("clip-higher ε_high (None: = epsilon)", None)
    beta: float = doc("k3 KL weight to the reference (IBM: 0.02)", 0.02)
    num_iterations: int = doc("μ: updates per batch of rollouts", 1)
    dynamic_sampling: bool = doc("drop groups whose rewards are all equal", True)
    overlong_cache: int = doc("soft overlong penalty window C (0: off)", 0)
    mixed_policy: bool = doc("replace one sample per group by the reference (π_φ = 1, unclipped)", False)
    rollout_engine: Literal["hf", "vllm"] = doc("who samples the rollouts: hf (the policy's generate) or vllm "
                                                "(CUDA; settings in vllm; see speechrl.rollout)", "hf")
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    offload_idle: bool = doc("time-shared schedule: keep the audio encoder, a full reference copy and the optimizer "
                             "state in CPU memory while the stages that do not use them run (CUDA only; "
                             "speechrl.schedule); per-stage peak memory is logged on CUDA either way", False)
    eval_every: int = doc("evaluate on dev every N steps (0: only at the end)", 20)
    dev_examples: int = doc("dev examples used for model selection", 96)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 10)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    seed: int = doc("seed for prompt order and sampling", 0)


def add_lora(policy: Any, cfg: LoRAConfig) -> None:
    """Freeze everything but a fresh LoRA adapter on the LM (the adapter-off model is the reference)."""
    from peft import LoraConfig, get_peft_model

    policy.requires_grad_(False)
    if cfg.r > 0:
        policy.lm = get_peft_model(policy.lm, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                         target_modules=cfg.target_modules))
    else:
        policy.lm.requires_grad_(True)


def reference_policy(policy: Any) -> Any:
    """A frozen copy of the policy for the KL term — needed only without LoRA: with an adapter, the
    reference is the same model with the adapter switched off (no second copy in memory)."""
    if hasattr(policy.lm, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy).eval()
    return ref.requires_grad_(False)


def _reference_logps(model: Any, policy: Any, ref: Any, enc, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        if ref is not None:
            return ref(enc, ids, mask)
        with policy.lm.disable_adapter():
            return model(enc, ids, mask)


@dataclass
class Rollout:
    """One step's samples: the encoding repeated G× (row k·G + j: prompt k, sample j), completion ids and
    mask, off-policy flags (mixed policy), decoded texts, and the engine's raw log-probs (NaN rows:
    samples the engine did not draw)."""

    enc: Any
    ids: torch.Tensor
    mask: torch.Tensor
    off_policy: torch.Tensor
    texts: list[str]
    logps: torch.Tensor


def rollout(policy: Any, examples: list[Example], feats: dict, cfg: GRPOConfig,
            engine: Engine | None = None, schedule: TimeShared | None = None) -> Rollout:
    """Encode once, sample G per prompt with the rollout engine (``cfg.rollout_engine`` by default);
    the two are stages of the time-shared ``schedule`` when one is given."""
    engine = engine or make_engine(cfg.rollout_engine, cfg.vllm)
    schedule = schedule or TimeShared("cpu", {}, offload=False)
    g = cfg.group_size
    with torch.no_grad():
        with schedule.stage("encode"):
            enc_g = policy.encode(prompt_batch(examples, feats)).detach().repeat(g)
        with schedule.stage("rollout"):
            ids, logps = engine.sample(policy, enc_g, cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    mask = completion_mask(ids, policy.eos_token_id)
    off_policy = torch.zeros(ids.shape[0], dtype=torch.bool)
    if cfg.mixed_policy:
        ref_ids, ref_mask = reference_tokens(policy.tokenizer, [e.reference for e in examples], policy.eos_token_id,
                                             cfg.max_new_tokens)
        rows = [ids[i, : int(mask[i].sum())].tolist() for i in range(ids.shape[0])]
        for k in range(len(examples)):
            rows[k * g + g - 1] = ref_ids[k, : int(ref_mask[k].sum())].tolist()
            off_policy[k * g + g - 1] = True
        ids, mask = pad_completions(rows, policy.pad_token_id)
        width = ids.shape[1]  # engine log-probs re-aligned to the new width; the reference rows unknown
        logps = torch.nn.functional.pad(logps, (0, max(0, width - logps.shape[1])), value=float("nan"))[:, :width]
        logps[off_policy] = float("nan")
    texts = decode(policy.tokenizer, ids, mask)
    device = enc_g["embeds"].device
    return Rollout(enc_g, ids.to(device), mask.to(device), off_policy, texts, logps.to(device))


def train_grpo(policy: Any, train: list[Example], dev: list[Example], feats: dict, task: str, cfg: GRPOConfig,
               out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "grpo") -> dict[str, Any]:
    """GRPO on ``policy`` in place (LoRA added); returns ``{best_score, best_step, steps, train_s}``."""
    out_dir = Path(out_dir)
    add_lora(policy, cfg.lora)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    best_path = out_dir / "best" / "model.safetensors"
    if (out_dir / "result.json").is_file():
        checkpoint.load_weights(best_path, policy)
        return read_json(out_dir / "result.json")
    accelerator = make_accelerator(cfg.seed)
    optimizer, scheduler = make_optimizer([{"params": trainable, "lr": cfg.lr}], cfg.max_steps, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(policy, optimizer)
    policy = accelerator.unwrap_model(model)
    reward_fn = make_reward(cfg.rewards) if not cfg.reward_url else RemoteReward(cfg.reward_url)
    engine = make_engine(cfg.rollout_engine, cfg.vllm, out_dir)
    ref_policy = reference_policy(policy) if cfg.beta > 0 else None
    # under DDP the policy's parameters stay where DDP bound them: only the reference and optimizer move
    schedule = TimeShared(accelerator.device, {
        "encoder": audio_encoder(policy) if accelerator.num_processes == 1 else None,
        "reference": ref_policy, "optimizer": getattr(optimizer, "optimizer", optimizer)}, offload=cfg.offload_idle)
    dev = dev[: cfg.dev_examples]
    state = {"best_score": None, "best_step": -1, "train_s": 0.0, "skipped_steps": 0, "invalid_rewards": 0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, policy, optimizer, scheduler)
        step, state = restored["step"], restored["state"]

    def evaluate_dev() -> None:
        with schedule.stage("evaluate"):
            metrics, _ = evaluate(policy, dev, feats, task, cfg.max_new_tokens, semantic=False, desc=f"{stage} dev")
        s = score(task, metrics)
        if state["best_score"] is None or s > state["best_score"]:
            state.update(best_score=s, best_step=step)
            checkpoint.save_weights(best_path, policy)
        if logger:
            logger.log({f"dev_{k}": v for k, v in metrics.items()}, step=step, stage=stage)

    if state["best_score"] is None:
        evaluate_dev()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, unit="step")
    while step < cfg.max_steps:
        t0 = time.time()
        batch = rank_batch(train, step, cfg.prompts_per_step, cfg.seed)
        policy.eval()  # no dropout in rollouts
        ro = rollout(policy, batch, feats, cfg, engine, schedule)
        enc, ids, mask, off_policy, texts = ro.enc, ro.ids, ro.mask, ro.off_policy, ro.texts
        t_rollout = time.time() - t0
        group_examples = [e for e in batch for _ in range(cfg.group_size)]
        with schedule.stage("reward"):
            rewards = torch.tensor(reward_fn([e.instruction for e in group_examples], texts,
                                             **reward_columns(group_examples)), dtype=torch.float32)
        if cfg.overlong_cache:
            rewards = rewards + soft_overlong_penalty(mask.sum(1).cpu(), cfg.max_new_tokens, cfg.overlong_cache)
        invalid = ~torch.isfinite(rewards)  # masked: left out of its group's statistics, Â = 0, not trained on
        state["invalid_rewards"] += int(accelerator.reduce(invalid.sum(), "sum"))
        rewards = torch.where(invalid, torch.full_like(rewards, math.nan), rewards)
        advantages = group_advantages(rewards, cfg.group_size, scale=cfg.scale_rewards)
        keep = ~invalid
        if cfg.dynamic_sampling:
            keep &= ~zero_variance_groups(rewards, cfg.group_size).repeat_interleave(cfg.group_size)
        metrics = {"reward": rewards[~invalid].mean().item() if (~invalid).any() else math.nan,
                   "completion_len": mask.sum(1).float().mean().item(), "rollout_s": t_rollout,
                   **reward_fn.metrics()}
        metrics = mean_over_ranks(accelerator, metrics)
        metrics["kept_samples"] = int(accelerator.reduce(keep.sum(), "sum"))
        if metrics["kept_samples"]:
            # a rank that kept nothing trains on its first sample with weight 0 (its backward joins DDP's)
            sel = keep.nonzero().squeeze(1) if keep.any() else torch.zeros(1, dtype=torch.long)
            enc_k, ids_k, mask_k = enc.select(sel), ids[sel], mask[sel]
            count = (mask_k.sum() if cfg.loss_type in ("dapo", "bnpo") else torch.tensor(len(sel))) * keep.any()
            weight = rank_weight(accelerator, count)
            adv_k, off_k = advantages[sel].to(ids.device), off_policy[sel].to(ids.device)
            with schedule.stage("reference"):
                ref = _reference_logps(model, policy, ref_policy, enc_k, ids_k, mask_k) if cfg.beta > 0 else None
            policy.train()
            with schedule.stage("update"):
                old = None
                if cfg.num_iterations > 1:
                    with torch.no_grad():
                        old = model(enc_k, ids_k, mask_k)
                for it in range(cfg.num_iterations):
                    logp = model(enc_k, ids_k, mask_k)
                    if it == 0:  # the trainer's view of the samples the engine drew: parity, for free
                        metrics.update(logp_parity(ro.logps[sel], logp, mask_k))
                    loss, stats = grpo_loss(logp, old, ref, adv_k, mask_k, loss_type=cfg.loss_type,
                                            eps_low=cfg.epsilon, eps_high=cfg.epsilon_high, beta=cfg.beta,
                                            max_completion_length=cfg.max_new_tokens, off_policy=off_k)
                    accelerator.backward(loss * weight)
                    optimizer.step()
                    optimizer.zero_grad()
            engine.sync_weights(policy)
            metrics.update(mean_over_ranks(accelerator, {k: (v * weight).item() for k, v in {"loss": loss, **stats}.items()}))
        else:
            state["skipped_steps"] += 1
        scheduler.step()
        step += 1
        state["train_s"] += time.time() - t0
        metrics["step_s"] = time.time() - t0
        metrics.update(schedule.metrics())
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward']:.3f}")
        if logger:
            logger.log(metrics, step=step, stage=stage)
        if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, policy, optimizer, scheduler, state)
    bar.close()
    evaluate_dev()
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if state["best_step"] != step:
        checkpoint.load_weights(best_path, policy)
    result = {"best_score": state["best_score"], "best_step": state["best_step"], "steps": step,
              "train_s": round(state["train_s"], 1), "skipped_steps": state["skipped_steps"],
              "invalid_rewards": state["invalid_rewards"]}
    write_json(out_dir / "result.json", result)
    return result
