"""RL for LLM-based TTS (Tongyi TTS GRPO, arXiv 2509.18569; DiffRO, arXiv 2507.05911): GRPO, DiffRO,
and GRPO + DiffRO with Tongyi's sample filtering.

One step reads like the methods:

1. **rollout**: B texts, G speech-token samples each at temperature T (the prompt encoded once);
2. **render** (GRPO and combined only — the expensive stage): tokens → units → vocoder → audio →
   Whisper → rewards R1 (ASR accuracy), R2 (duration vs the group median), R3 (token diversity) →
   group advantages (:func:`~speechrl.trainers.grpo_core.score_groups`);
3. **teacher forcing**: policy logits over the speech vocabulary (with grad) and the reference's
   (the SFT model: the LoRA adapter switched off);
4. **update** μ times (:func:`~speechrl.trainers.grpo_core.policy_update`) with the loss by ``method``:

   - ``grpo``:      L_GRPO = grpo_loss(log π_T(o), Â, k3 KL, β) on log-probs at the rollout temperature
   - ``diffro``:    L_Diff = mean_i(−R_i + β_d · KL_full,i),  R_i = Σ_n log P_T2T(Y_n | Y_<n, ỹ_i),
     ỹ_t = GumbelSoftmax(logits_t, τ) embedded as ỹ·E into the frozen Token2Text (:mod:`speechrl.losses.diffro`)
   - ``combined``:  L_GRPO (all samples) + λ · L_Diff over S, S = {i : Â_i > 0} with ``sample_filter``
     (degenerate samples that never stop do not reach DiffRO), S = all samples without it (the naive
     combination, kept for the ablation).

   With μ > 1 the GRPO ratios are taken against the rollout policy (the rendering is paid once;
   DiffRO draws fresh Gumbel noise each iteration). DiffRO relaxes the policy's own (T = 1)
   distribution: it needs no samples' probabilities.

DiffRO needs no rendering, so its step costs a rollout and two small forward/backward passes. What is
GRPO's own — group statistics with missing rewards masked, dynamic sampling, the update, DDP
weighting, the loop with dev selection and checkpoints — lives in :mod:`speechrl.trainers.grpo_core`,
shared with the speech trainer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from speechrl.audio import SAMPLE_RATE
from speechrl.config import doc
from speechrl.eval.metrics import selection_score
from speechrl.eval.tts import DecodeConfig, evaluate_tts
from speechrl.losses.diffro import diffro_loss, full_token_kl, gumbel_softmax_tokens
from speechrl.losses.logps import token_logps
from speechrl.rewards import make_reward
from speechrl.rewards.tts import UnitRenderer
from speechrl.runlog import MetricsLogger
from speechrl.text import sentence_wer
from speechrl.trainers.common import mean_over_ranks, rank_batch, rank_weight
from speechrl.trainers.grpo_core import (GRPOConfig, cached_result, check_reward_names, policy_update, prepare,
                                         rows_to_train, score_groups, train_loop, train_weight)
from speechrl.trainers.lora import add_lora, reference_forward, reference_policy
from speechrl.trainers.tts_sft import TTSExample

__all__ = ["TTSRLConfig", "diffro_objective", "train_tts_rl"]


@dataclass
class TTSRLConfig(GRPOConfig):
    """:class:`~speechrl.trainers.grpo_core.GRPOConfig` plus what is TTS RL's own: the rendered rewards,
    the method, and DiffRO's settings."""

    method: Literal["grpo", "diffro", "combined"] = doc(
        "grpo (rendered rewards), diffro (Token2Text likelihood), combined (GRPO + DiffRO)", "grpo")
    sample_filter: bool = doc("combined: DiffRO only on samples with advantage > 0 (off: naive sum)", True)
    rewards: dict[str, float] = doc("GRPO reward name → weight (tanh_wer/accuracy_wer = R1, tts_duration = R2, "
                                    "tts_diversity = R3)", default_factory=lambda: {"tanh_wer": 1.0,
                                                                                   "tts_duration": 1.0})
    reward_window_s: float = doc("Whisper's encoder window (s) when transcribing the rollouts for R1 (the clips that "
                                 "fit; dev and test always use 30 s): a cheaper reward transcriber "
                                 "(benchmarks/tts_render.py)", 30.0, ge=1, le=30)
    diffro_beta: float = doc("DiffRO: full token-level KL weight to the reference", 0.1, ge=0)
    tau: float = doc("Gumbel-Softmax temperature τ", 1.0, gt=0)
    straight_through: bool = doc("hard one-hot forward, soft gradient (straight-through Gumbel)", False)
    diffro_weight: float = doc("λ: weight of the DiffRO loss in the combined objective", 1.0, ge=0)
    diffro_reward: Literal["sum", "mean"] = doc("R = Σ_n log P (paper) or its mean per text token", "mean")
    mtr_weight: float = doc("multi-task reward: weight of log P_rate(class of mtr_speed | ỹ) (0: off)", 0.0, ge=0)
    mtr_speed: float = doc("MTR target speaking rate (a corpus speed)", 1.0, gt=0)

    def validate(self) -> None:
        if self.uses_rewards:
            check_reward_names(self.rewards)

    @property
    def uses_rewards(self) -> bool:
        return self.method in ("grpo", "combined")

    @property
    def uses_diffro(self) -> bool:
        return self.method in ("diffro", "combined")


def diffro_objective(logits: torch.Tensor, ref_logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                     token2text: Any, text_ids: torch.Tensor, text_mask: torch.Tensor, cfg: TTSRLConfig,
                     sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """DiffRO loss over the samples S selected by ``sample_weight`` (bool ``[N]``; None: all):

    ỹ = GumbelSoftmax(logits, τ) on the unit tokens → frozen Token2Text → R_i = Σ_n log P(Y_n | ỹ_i)
    (+ ``mtr_weight`` · log P_rate(mtr_speed | ỹ_i)); KL_i = full token-level KL to the reference;
    L = mean_{i∈S}(−R_i + β_d · KL_i) (:func:`~speechrl.losses.diffro.diffro_loss`). Only the rows in S
    are relaxed and scored (an empty S gives an exact, differentiable 0 and the same logged keys, at 0)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    if sample_weight is not None:
        rows = sample_weight.to(torch.bool).nonzero().squeeze(1).to(logits.device)
    if rows.numel() == 0:
        empty = {"t2t_logprob": 0.0, "full_kl": 0.0, "diffro_samples": 0.0}
        return logits.sum() * 0.0, {**empty, **({"mtr_rate_logp": 0.0} if cfg.mtr_weight else {})}
    logits, ref_logits, ids, mask = logits[rows], ref_logits[rows], ids[rows], mask[rows]
    text_ids, text_mask = text_ids[rows], text_mask[rows]
    num_units = token2text.vocab.num_unit_tokens
    soft = gumbel_softmax_tokens(logits, cfg.tau, hard=cfg.straight_through)[..., :num_units]
    unit_mask = mask * (ids < num_units).to(mask.dtype)  # speech tokens; EOS is not read by Token2Text
    stats: dict[str, float] = {}
    if cfg.mtr_weight:
        reward, rate_logits = token2text.text_logprob(soft, unit_mask, text_ids, text_mask, return_rate_logits=True)
        target = token2text.rate_class(cfg.mtr_speed)
        rate_logp = rate_logits.float().log_softmax(-1)[:, target]
        stats["mtr_rate_logp"] = rate_logp.mean().item()
    else:
        reward = token2text.text_logprob(soft, unit_mask, text_ids, text_mask)
    if cfg.diffro_reward == "mean":
        reward = reward / text_mask.sum(-1).clamp(min=1.0)
    stats["t2t_logprob"] = reward.mean().item()
    if cfg.mtr_weight:
        reward = reward + cfg.mtr_weight * rate_logp
    kl = full_token_kl(logits, ref_logits, mask, per_sequence=True)
    stats.update(full_kl=kl.mean().item(), diffro_samples=float(rows.numel()))
    return diffro_loss(reward, kl, cfg.diffro_beta), stats


def _rewards(policy: Any, ids: torch.Tensor, texts: list[str], group: list[int], renderer: UnitRenderer,
             reward_fn: Any) -> tuple[torch.Tensor, list[str]]:
    units = policy.to_units(ids)
    wavs, hyps = renderer(units)
    mask = policy.completion_mask(ids)
    tokens = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
    values = reward_fn(texts, hyps, reference=texts, seconds=[len(w) / SAMPLE_RATE for w in wavs],
                       speech_tokens=tokens, group=group)
    return torch.tensor(values, dtype=torch.float32), hyps


def train_tts_rl(policy: Any, token2text: Any, prompts: Sequence[str], dev: Sequence[TTSExample],
                 cfg: TTSRLConfig, out_dir: str | Path, logger: MetricsLogger | None = None, stage: str | None = None,
                 renderer: UnitRenderer | None = None, decode: DecodeConfig | None = None,
                 initial_dev: dict[str, float] | None = None, evaluator: UnitRenderer | None = None) -> dict[str, Any]:
    """RL on ``policy`` (a :class:`~speechrl.models.tts_lm.TTSLM`, LoRA added; its SFT weights are the
    reference) in place on the texts ``prompts`` (RL needs no reference speech). ``token2text``: the frozen
    reward model (DiffRO; may be None for ``grpo``). The best-on-dev weights (dev WER of rendered,
    transcribed samples) are the result; with no dev texts, the last weights.
    ``initial_dev``: the policy's dev metrics when already known (skips the step-0 evaluation). ``renderer``
    hears the rollouts (in ``cfg.reward_window_s``), ``evaluator`` the dev texts (default: ``renderer``).
    Returns ``{best_score, best_step, steps, train_s, step_s, ...}``
    (:func:`~speechrl.trainers.grpo_core.train_loop`)."""
    out_dir = Path(out_dir)
    stage = stage or cfg.method
    renderer = renderer or UnitRenderer()
    decode = decode or DecodeConfig()
    if cfg.uses_diffro and token2text is None:
        raise ValueError(f"method {cfg.method!r} needs a Token2Text model")
    if token2text is not None:
        token2text.eval().requires_grad_(False)
    add_lora(policy, cfg.lora)
    if (cached := cached_result(out_dir, policy)) is not None:
        return cached
    accelerator, model, policy, optimizer, scheduler = prepare(policy, cfg)
    if token2text is not None:  # the frozen reward model sits beside the policy (it is not trained: no DDP)
        token2text.to(accelerator.device)
    ref_policy = reference_policy(policy)
    reward_fn = make_reward(cfg.rewards) if cfg.uses_rewards else None
    reward_renderer = renderer.windowed(cfg.reward_window_s) if cfg.reward_window_s < 30 else renderer
    dev = list(dev[: cfg.dev_examples])
    g, temperature = cfg.group_size, cfg.temperature
    filtered = cfg.method == "combined" and cfg.sample_filter

    def evaluate_dev() -> tuple[float, dict[str, float]]:
        metrics = evaluate_tts(policy, dev, evaluator or renderer, decode, f"{stage} dev")[0]
        return selection_score("tts", metrics), metrics

    def step(i: int, state: dict[str, Any]) -> dict[str, float]:
        t0 = time.time()
        batch = rank_batch(prompts, i, cfg.prompts_per_step, cfg.seed)  # whole groups per rank
        texts = [t for t in batch for _ in range(g)]
        policy.eval()
        with torch.no_grad():
            ids = policy.generate(policy.encode(batch).repeat(g), cfg.max_new_tokens, temperature=temperature,
                                  top_k=cfg.top_k, top_p=cfg.top_p)
        mask = policy.completion_mask(ids)
        local = {"rollout_s": time.time() - t0, "tokens": mask.sum(1).mean().item(),
                 "unfinished": float((~(ids == policy.eos_token_id).any(1)).sum())}
        advantages, keep, metrics = torch.zeros(ids.shape[0]), torch.ones(ids.shape[0], dtype=torch.bool), {}
        if cfg.uses_rewards:
            t1 = time.time()
            rewards, hyps = _rewards(policy, ids, texts, [k // g for k in range(len(texts))], reward_renderer,
                                     reward_fn)
            groups = score_groups(rewards, mask.sum(1), cfg, accelerator)
            advantages, keep, metrics = groups.advantages, groups.keep, groups.metrics
            local.update(render_s=time.time() - t1, **reward_fn.metrics(),
                         rollout_wer=float(np.mean([sentence_wer(t, h) for t, h in zip(texts, hyps)])))
            if not metrics["kept_samples"]:
                state["skipped_steps"] += 1
                return {**metrics, **mean_over_ranks(accelerator, local)}
        t2 = time.time()
        sel = rows_to_train(keep)
        ids_k, mask_k, adv_k, texts_k = ids[sel], mask[sel], advantages[sel], [texts[k] for k in sel.tolist()]
        diffro_rows = keep[sel] & (adv_k > 0) if filtered else keep[sel]  # S
        text_ids = text_mask = None
        if cfg.uses_diffro:
            text_ids, text_mask = token2text.text_targets(texts_k)
        policy.train()
        enc = policy.encode(texts_k)
        ref_logits = reference_forward(model, policy, ref_policy, enc, ids_k, mask_k, return_logits=True)
        ref_logp = token_logps(ref_logits, ids_k, temperature) if cfg.uses_rewards and cfg.beta > 0 else None
        diffro_scale = 0.0  # the DiffRO term's DDP weight (an all-reduce only when there is one), times λ
        if cfg.uses_diffro:
            diffro_scale = rank_weight(accelerator, diffro_rows.sum()) * (cfg.diffro_weight if cfg.method == "combined"
                                                                          else 1.0)

        def forward() -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(enc, ids_k, mask_k, return_logits=True)
            return token_logps(logits, ids_k, temperature), logits

        def diffro_term(logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            loss, stats = diffro_objective(logits, ref_logits, ids_k, mask_k, token2text, text_ids, text_mask, cfg,
                                           diffro_rows)
            return loss * diffro_scale, {"diffro_loss": (loss * diffro_scale).item(), **stats}

        stats, _ = policy_update(forward, optimizer, accelerator, cfg, advantages=adv_k.to(ids_k.device), mask=mask_k,
                                 weight=train_weight(accelerator, cfg.loss_type, mask_k, bool(keep.any())),
                                 ref_logp=ref_logp, policy_gradient=cfg.uses_rewards,
                                 extra=diffro_term if cfg.uses_diffro else None)
        return {**metrics, **mean_over_ranks(accelerator, local), **stats, "update_s": time.time() - t2}

    return train_loop(policy, optimizer, scheduler, accelerator, cfg, out_dir, stage=stage, step=step,
                      evaluate=evaluate_dev if dev else None, logger=logger,
                      initial_dev=(selection_score("tts", initial_dev), initial_dev) if initial_dev is not None and dev else None)
