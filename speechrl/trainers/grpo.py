"""GRPO for speech policies (IBM speech GRPO; Tongyi ASR rewards), with mixed-policy GRPO.

One step reads like the method:

1. **encode** the B prompts' audio once (frozen front end: the time-shared schedule's encoder stage);
2. **rollout** G samples per prompt from the repeated encoding at temperature T (``mixed_policy``:
   G−1 samples plus the ground-truth reference as an off-policy sample);
3. **reward** every completion (weighted rewards, each logged; a NaN reward masks its sample);
4. **advantages** per group, zero-variance groups dropped (:func:`~speechrl.trainers.grpo_core.score_groups`);
5. **update** μ times (:func:`~speechrl.trainers.grpo_core.policy_update`): teacher-forced log-probs at
   T → :func:`speechrl.losses.grpo.grpo_loss` with the k3 KL to the reference (the LoRA adapter
   switched off).

What is GRPO's own — group statistics, the update, DDP weighting, the loop with dev selection and
checkpoints — lives in :mod:`speechrl.trainers.grpo_core`, shared with the TTS trainer; this module
holds what a speech rollout is and how it is rewarded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from speechrl.config import ConfigError, doc
from speechrl.data.tasks import Example, reward_columns
from speechrl.eval.metrics import selection_score
from speechrl.eval.speech_tasks import evaluate, prompt_batch
from speechrl.models.policy import completion_mask, decode, pad_completions
from speechrl.rewards import make_reward
from speechrl.rewards.service import RemoteReward
from speechrl.rollout import Engine, VLLMConfig, logp_parity, make_engine
from speechrl.runlog import MetricsLogger
from speechrl.schedule import TimeShared, audio_encoder
from speechrl.trainers.common import mean_over_ranks, rank_batch, reference_tokens
from speechrl.trainers.grpo_core import (GRPOConfig, cached_result, check_reward_names, policy_update, prepare,
                                         rows_to_train, score_groups, train_loop, train_weight)
from speechrl.trainers.lora import add_lora, reference_forward, reference_policy


@dataclass
class SpeechGRPOConfig(GRPOConfig):
    """:class:`~speechrl.trainers.grpo_core.GRPOConfig` plus what is a speech rollout's own."""

    rewards: dict[str, float] = doc("reward name → weight (see speechrl.rewards.REWARDS)",
                                    default_factory=lambda: {"bleu": 1.0})
    reward_url: str = doc("score with a reward service at this URL instead of in-process (python -m "
                          "speechrl.rewards.service; unreachable batches become missing rewards)", "")
    mixed_policy: bool = doc("replace one sample per group by the reference (π_φ = 1, unclipped, no KL)", False)
    rollout_engine: Literal["hf", "vllm"] = doc("who samples the rollouts: hf (the policy's generate) or vllm "
                                                "(CUDA; settings in vllm; see speechrl.rollout)", "hf")
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    offload_idle: bool = doc("time-shared schedule: keep the audio encoder, a full reference copy and the optimizer "
                             "state in CPU memory while the stages that do not use them run (CUDA only; "
                             "speechrl.schedule); per-stage peak memory is logged on CUDA either way", False)


    def validate(self) -> None:
        if not self.reward_url:  # a reward service checks the names it is sent itself
            check_reward_names(self.rewards)
        if self.rollout_engine == "vllm" and self.vllm.mode == "server" and not self.vllm.url:
            raise ConfigError("vllm.url: the vllm server mode needs the server's URL")

@dataclass
class Rollout:
    """One step's samples: the encoding repeated G× (row k·G + j: prompt k, sample j), completion ids and
    mask, off-policy flags (mixed policy), decoded texts, and the engine's log-probs at the rollout
    temperature (NaN rows: samples the engine did not draw)."""

    enc: Any
    ids: torch.Tensor
    mask: torch.Tensor
    off_policy: torch.Tensor
    texts: list[str]
    logps: torch.Tensor


def rollout(policy: Any, examples: list[Example], feats: dict, cfg: SpeechGRPOConfig,
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
            ids, logps = engine.sample(policy, enc_g, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k)
    mask = completion_mask(ids, policy.eos_token_id)
    off_policy = torch.zeros(ids.shape[0], dtype=torch.bool)
    if cfg.mixed_policy:
        ref_ids, ref_mask = reference_tokens(policy, [e.reference for e in examples], cfg.max_new_tokens)
        rows = [ids[i, : int(mask[i].sum())].tolist() for i in range(ids.shape[0])]
        for k in range(len(examples)):
            rows[k * g + g - 1] = ref_ids[k, : int(ref_mask[k].sum())].tolist()
            off_policy[k * g + g - 1] = True
        ids, mask = pad_completions(rows, policy.pad_token_id)
        width = ids.shape[1]  # engine log-probs re-aligned to the new width; the reference rows unknown
        logps = torch.nn.functional.pad(logps, (0, max(0, width - logps.shape[1])), value=float("nan"))[:, :width]
        logps[off_policy] = float("nan")
    texts = decode(policy.tokenizer, ids, mask)
    device = enc_g.device
    return Rollout(enc_g, ids.to(device), mask.to(device), off_policy, texts, logps.to(device))


def score_rows(reward_fn: Any, examples: list[Example], texts: list[str],
               off_policy: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards ``[N]`` of the rows and the reward function's logged values (``reward_fn.metrics()``) of
    the policy's own samples: the mixed policy's reference rows are scored in a second call, after."""
    rewards, metrics = torch.full((len(texts),), float("nan")), {}
    for rows in (~off_policy, off_policy):
        index = rows.nonzero().squeeze(1).tolist()
        if index:
            picked = [examples[i] for i in index]
            values = reward_fn([e.instruction for e in picked], [texts[i] for i in index], **reward_columns(picked))
            rewards[index] = torch.tensor(values, dtype=torch.float32)
        metrics = metrics or reward_fn.metrics()
    return rewards, metrics


def train_grpo(policy: Any, train: list[Example], dev: list[Example], feats: dict, task: str, cfg: SpeechGRPOConfig,
               out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "grpo") -> dict[str, Any]:
    """GRPO on ``policy`` in place (LoRA added); returns ``{best_score, best_step, steps, train_s, ...}``
    (:func:`~speechrl.trainers.grpo_core.train_loop`)."""
    out_dir = Path(out_dir)
    add_lora(policy, cfg.lora)
    if (cached := cached_result(out_dir, policy)) is not None:
        return cached
    accelerator, model, policy, optimizer, scheduler = prepare(policy, cfg)
    reward_fn = make_reward(cfg.rewards) if not cfg.reward_url else RemoteReward(cfg.reward_url)
    engine = make_engine(cfg.rollout_engine, cfg.vllm, out_dir)
    ref_policy = reference_policy(policy) if cfg.beta > 0 else None
    # under DDP the policy's parameters stay where DDP bound them: only the reference and optimizer move
    schedule = TimeShared(accelerator.device, {
        "encoder": audio_encoder(policy) if accelerator.num_processes == 1 else None,
        "reference": ref_policy, "optimizer": getattr(optimizer, "optimizer", optimizer)}, offload=cfg.offload_idle)
    dev = dev[: cfg.dev_examples]
    g, temperature = cfg.group_size, cfg.temperature

    def evaluate_dev() -> tuple[float, dict[str, float]]:
        with schedule.stage("evaluate"):
            metrics, _ = evaluate(policy, dev, feats, task, cfg.max_new_tokens, semantic=False, desc=f"{stage} dev")
        return selection_score(task, metrics), metrics

    def step(i: int, state: dict[str, Any]) -> dict[str, float]:
        t0 = time.time()
        batch = rank_batch(train, i, cfg.prompts_per_step, cfg.seed)
        policy.eval()  # no dropout in rollouts
        ro = rollout(policy, batch, feats, cfg, engine, schedule)
        t_rollout = time.time() - t0
        group_examples = [e for e in batch for _ in range(g)]
        with schedule.stage("reward"):
            rewards, reward_metrics = score_rows(reward_fn, group_examples, ro.texts, ro.off_policy)
        groups = score_groups(rewards, ro.mask.sum(1), cfg, accelerator, sampled=~ro.off_policy)
        metrics = {**groups.metrics, **mean_over_ranks(accelerator, {
            "completion_len": ro.mask.sum(1).float().mean().item(), "rollout_s": t_rollout, **reward_metrics})}
        if not groups.metrics["kept_samples"]:
            state["skipped_steps"] += 1
            return {**metrics, **schedule.metrics()}
        sel = rows_to_train(groups.keep)
        enc, ids, mask = ro.enc.select(sel), ro.ids[sel], ro.mask[sel]
        with schedule.stage("reference"):
            ref = reference_forward(model, policy, ref_policy, enc, ids, mask, temperature) if cfg.beta > 0 else None
        policy.train()
        with schedule.stage("update"):
            stats, logp = policy_update(lambda: (model(enc, ids, mask, temperature), None), optimizer, accelerator,
                                        cfg, advantages=groups.advantages[sel], mask=mask, ref_logp=ref,
                                        weight=train_weight(accelerator, cfg.loss_type, mask, bool(groups.keep.any())),
                                        off_policy=ro.off_policy[sel].to(ids.device))
        engine.sync_weights(policy)
        # the trainer's view of the samples the engine drew: parity, for free
        return {**metrics, **stats, **logp_parity(ro.logps[sel], logp, mask), **schedule.metrics()}

    return train_loop(policy, optimizer, scheduler, accelerator, cfg, out_dir, stage=stage, step=step,
                      evaluate=evaluate_dev if dev else None, logger=logger)
