"""RL for LLM-based TTS (SPEC §3): GRPO, DiffRO, and GRPO + DiffRO with Tongyi's sample filtering.

One step reads like the methods:

1. **rollout**: B texts, G speech-token samples each at temperature 1.0 (the prompt encoded once);
2. **render** (GRPO and combined only — the expensive stage): tokens → units → vocoder → audio →
   Whisper → rewards R1 (ASR accuracy), R2 (duration vs the group median), R3 (token diversity) →
   group advantages Â (:func:`speechrl.losses.grpo.group_advantages`);
3. **teacher forcing**: policy logits over the speech vocabulary (with grad) and the reference's
   (the SFT model: the LoRA adapter switched off);
4. **loss** by ``method``:

   - ``grpo``:      L_GRPO = grpo_loss(log π(o), Â, k3 KL, β)                  (:func:`~speechrl.losses.grpo.grpo_loss`)
   - ``diffro``:    L_Diff = mean_i(−R_i + β_d · KL_full,i),  R_i = Σ_n log P_T2T(Y_n | Y_<n, ỹ_i),
     ỹ_t = GumbelSoftmax(logits_t, τ) embedded as ỹ·E into the frozen Token2Text (:mod:`speechrl.losses.diffro`)
   - ``combined``:  L_GRPO (all samples) + λ · L_Diff over S, S = {i : Â_i > 0} with ``sample_filter``
     (degenerate samples that never stop do not reach DiffRO), S = all samples without it (the naive
     combination, kept for the ablation);
5. **update**, μ = ``num_iterations`` times on the same rollouts (the rendering is paid once): with μ = 1
   the ratios are 1 and the GRPO gradient is −Â ∇log π; with μ > 1 the GRPO ratios are taken against the
   rollout policy and clipped to [1 − ε, 1 + ε] (DiffRO draws fresh Gumbel noise each iteration).

DiffRO needs no rendering, so its step costs a rollout and two small forward/backward passes.
The trainer keeps the best-on-dev weights (dev WER of rendered, transcribed samples), checkpoints every
``checkpoint_every`` steps (resumable: the same losses as an uninterrupted run) and caches its result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.audio import SAMPLE_RATE
from speechrl.config import doc
from speechrl.losses.diffro import diffro_loss, full_token_kl, gumbel_softmax_tokens
from speechrl.losses.grpo import group_advantages, grpo_loss
from speechrl.losses.logps import token_logps
from speechrl.rewards import make_reward
from speechrl.rewards.tts import UnitRenderer
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.text import cer, sentence_wer, wer
from speechrl.trainers.common import make_accelerator, make_optimizer, mean_over_ranks, rank_batch, rank_weight
from speechrl.trainers.grpo import LoRAConfig, add_lora, reference_policy
from speechrl.trainers.tts_sft import TTSExample

__all__ = ["DecodeConfig", "TTSRLConfig", "synthesize", "evaluate_tts", "diffro_objective", "rl_loss",
           "train_tts_rl"]


@dataclass
class DecodeConfig:
    temperature: float = doc("sampling temperature for evaluation (0: greedy)", 0.0)
    top_k: int = doc("top-k truncation when sampling (0: off)", 0)
    top_p: float = doc("nucleus mass when sampling", 1.0)
    max_new_tokens: int = doc("speech-token cap per utterance", 128)
    batch_size: int = doc("texts decoded together", 32)
    seed: int = doc("seed of the evaluation sampler (same samples for every system)", 0)


@dataclass
class TTSRLConfig:
    method: Literal["grpo", "diffro", "combined"] = doc(
        "grpo (rendered rewards), diffro (Token2Text likelihood), combined (GRPO + DiffRO)", "grpo")
    sample_filter: bool = doc("combined: DiffRO only on samples with advantage > 0 (off: naive sum)", True)
    rewards: dict[str, float] = doc("GRPO reward name → weight (tanh_wer/accuracy_wer = R1, tts_duration = R2, "
                                    "tts_diversity = R3)", default_factory=lambda: {"tanh_wer": 1.0,
                                                                                   "tts_duration": 1.0})
    group_size: int = doc("G: samples per text", 8)
    prompts_per_step: int = doc("B: texts per step", 1)
    max_steps: int = doc("training steps", 24)
    lr: float = doc("learning rate (LoRA parameters; high because the CPU budget allows few steps)", 2e-3)
    warmup_steps: int = doc("linear warm-up steps", 0)
    temperature: float = doc("rollout temperature", 1.0)
    top_k: int = doc("rollout top-k (0: off)", 0)
    max_new_tokens: int = doc("rollout speech-token cap", 128)
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = doc("GRPO normalisation of the token terms", "grpo")
    scale_rewards: Literal["std", "none"] = doc("group z-score (std) or mean-only (none)", "std")
    beta: float = doc("GRPO: k3 KL weight to the reference", 0.1)
    num_iterations: int = doc("μ: updates per batch of rollouts (ratios against the rollout policy)", 1)
    epsilon: float = doc("GRPO clip ε (active when num_iterations > 1)", 0.2)
    diffro_beta: float = doc("DiffRO: full token-level KL weight to the reference", 0.1)
    tau: float = doc("Gumbel-Softmax temperature τ", 1.0)
    straight_through: bool = doc("hard one-hot forward, soft gradient (straight-through Gumbel)", False)
    diffro_weight: float = doc("λ: weight of the DiffRO loss in the combined objective", 1.0)
    diffro_reward: Literal["sum", "mean"] = doc("R = Σ_n log P (paper) or its mean per text token", "mean")
    mtr_weight: float = doc("multi-task reward: weight of log P_rate(class of mtr_speed | ỹ) (0: off)", 0.0)
    mtr_speed: float = doc("MTR target speaking rate (a corpus speed)", 1.0)
    eval_every: int = doc("dev evaluation (rendered WER) every N steps (0: only at the end)", 8)
    dev_examples: int = doc("dev texts for model selection (0: no selection, keep the last weights)", 24)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 8)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    seed: int = doc("seed for text order and sampling", 0)

    @property
    def uses_rewards(self) -> bool:
        return self.method in ("grpo", "combined")

    @property
    def uses_diffro(self) -> bool:
        return self.method in ("diffro", "combined")


# ---------------------------------------------------------------------------------------------
# synthesis and evaluation


@torch.no_grad()
def synthesize(policy: Any, texts: Sequence[str], decode: DecodeConfig) -> list[Any]:
    """Texts → speech-token units (:class:`~speechrl.speech.units.Units`), decoded with ``decode``
    (a seeded sampler, so every system sees the same noise)."""
    was_training = policy.training
    policy.eval()
    gen = torch.Generator(device=policy.device).manual_seed(decode.seed)
    units = []
    for i in range(0, len(texts), decode.batch_size):
        ids = policy.generate(policy.encode(texts[i:i + decode.batch_size]), decode.max_new_tokens,
                              do_sample=decode.temperature > 0, temperature=decode.temperature, top_k=decode.top_k,
                              top_p=decode.top_p, generator=gen)
        units += policy.to_units(ids)
    policy.train(was_training)
    return units


def evaluate_tts(policy: Any, examples: Sequence[TTSExample], renderer: UnitRenderer, decode: DecodeConfig,
                 desc: str = "eval") -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Synthesize, render, transcribe. Metrics: ``wer``/``cer`` (corpus-level, normalised text),
    ``duration_ratio`` (mean over texts of rendered seconds / reference-speech seconds), ``tokens``
    (mean speech tokens). Details per text: ``id, text, hypothesis, wer, seconds, wav``."""
    t0 = time.time()
    texts = [e.text for e in examples]
    units = synthesize(policy, texts, decode)
    wavs, hyps = [], []
    for i in tqdm(range(0, len(units), 8), desc=desc, unit="batch", leave=False):
        w, h = renderer(units[i:i + 8])
        wavs += w
        hyps += h
    return tts_metrics(examples, wavs, hyps, [len(u) for u in units], time.time() - t0)


def tts_metrics(examples: Sequence[TTSExample], wavs: Sequence[np.ndarray], hyps: Sequence[str],
                tokens: Sequence[int] | None = None, seconds: float = 0.0) -> tuple[dict[str, float], list[dict]]:
    texts = [e.text for e in examples]
    secs = [len(w) / SAMPLE_RATE for w in wavs]
    ratios = [s / e.seconds for s, e in zip(secs, examples) if e.seconds > 0]
    metrics = {"wer": round(wer(texts, hyps), 4), "cer": round(cer(texts, hyps), 4),
               "duration_ratio": round(float(np.mean(ratios)), 4) if ratios else math.nan,
               "eval_s": round(seconds, 1)}
    if tokens is not None:
        metrics["tokens"] = round(float(np.mean(tokens)), 2)
    details = [{"id": e.id, "text": e.text, "hypothesis": h, "wer": round(sentence_wer(e.text, h), 4),
                "seconds": round(s, 3), "wav": w} for e, h, s, w in zip(examples, hyps, secs, wavs)]
    return metrics, details


# ---------------------------------------------------------------------------------------------
# losses


def diffro_objective(logits: torch.Tensor, ref_logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                     token2text: Any, text_ids: torch.Tensor, text_mask: torch.Tensor, cfg: TTSRLConfig,
                     sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """DiffRO loss over the samples S selected by ``sample_weight`` (bool ``[N]``; None: all):

    ỹ = GumbelSoftmax(logits, τ) on the unit tokens → frozen Token2Text → R_i = Σ_n log P(Y_n | ỹ_i)
    (+ ``mtr_weight`` · log P_rate(mtr_speed | ỹ_i)); KL_i = full token-level KL to the reference;
    L = mean_{i∈S}(−R_i + β_d · KL_i) (:func:`~speechrl.losses.diffro.diffro_loss`). Only the rows in S
    are relaxed and scored (an empty S gives an exact, differentiable 0)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    if sample_weight is not None:
        rows = sample_weight.to(torch.bool).nonzero().squeeze(1)
    if rows.numel() == 0:
        return logits.sum() * 0.0, {"diffro_samples": 0.0}
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


def rl_loss(logits: torch.Tensor, ref_logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
            advantages: torch.Tensor, token2text: Any, text_ids: torch.Tensor, text_mask: torch.Tensor,
            cfg: TTSRLConfig, old_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's loss by ``cfg.method`` (module docstring) from teacher-forced policy/reference logits;
    ``old_logp``: the rollout policy's token log-probs (None: ratio 1, as with μ = 1)."""
    loss = logits.new_zeros(())
    stats: dict[str, float] = {}
    if cfg.uses_rewards:
        logp, ref_logp = token_logps(logits, ids), token_logps(ref_logits, ids)
        grpo, grpo_stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, loss_type=cfg.loss_type,
                                     eps_low=cfg.epsilon, beta=cfg.beta, max_completion_length=cfg.max_new_tokens)
        loss = loss + grpo
        stats.update(grpo_loss=grpo.item(), **{k: v.item() for k, v in grpo_stats.items()})
    if cfg.uses_diffro:
        weight = advantages > 0 if cfg.method == "combined" and cfg.sample_filter else None
        diff, diff_stats = diffro_objective(logits, ref_logits, ids, mask, token2text, text_ids, text_mask, cfg,
                                            weight)
        loss = loss + (cfg.diffro_weight if cfg.method == "combined" else 1.0) * diff
        stats.update(diffro_loss=diff.item(), **diff_stats)
    return loss, stats


# ---------------------------------------------------------------------------------------------
# the trainer


def _reference_logits(model: Any, policy: Any, ref: Any, enc, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        if ref is not None:
            return ref.speech_logits(enc, ids, mask)
        with policy.lm.disable_adapter():
            return model(enc, ids, mask, return_logits=True)


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
                 initial_dev: dict[str, float] | None = None) -> dict[str, Any]:
    """RL on ``policy`` (a :class:`~speechrl.models.tts_lm.TTSLM`, LoRA added; its SFT weights are the
    reference) in place on the texts ``prompts`` (RL needs no reference speech). ``token2text``: the frozen
    reward model (DiffRO; may be None for ``grpo``).
    ``initial_dev``: the policy's dev metrics when already known (skips the step-0 evaluation).
    Returns ``{best_score, best_step, steps, train_s, step_s, ...}``."""
    out_dir = Path(out_dir)
    stage = stage or cfg.method
    renderer = renderer or UnitRenderer()
    decode = decode or DecodeConfig()
    if cfg.uses_diffro and token2text is None:
        raise ValueError(f"method {cfg.method!r} needs a Token2Text model")
    if token2text is not None:
        token2text.eval().requires_grad_(False)
    add_lora(policy, cfg.lora)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    best_path = out_dir / "best" / "model.safetensors"
    if (out_dir / "result.json").is_file():
        if best_path.is_file():
            checkpoint.load_weights(best_path, policy)
        return read_json(out_dir / "result.json")
    accelerator = make_accelerator(cfg.seed)
    optimizer, scheduler = make_optimizer([{"params": trainable, "lr": cfg.lr}], cfg.max_steps, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(policy, optimizer)
    if token2text is not None:  # the frozen reward model sits beside the policy (it is not trained: no DDP)
        token2text.to(accelerator.device)
    policy = accelerator.unwrap_model(model)
    ref_policy = reference_policy(policy)
    reward_fn = make_reward(cfg.rewards) if cfg.uses_rewards else None
    dev = list(dev[: cfg.dev_examples])
    g = cfg.group_size
    state = {"best_score": None, "best_step": -1, "train_s": 0.0, "invalid_rewards": 0, "dev": {}}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, policy, optimizer, scheduler)
        step, state = restored["step"], restored["state"]

    def evaluate_dev(known: dict[str, float] | None = None) -> None:
        if not dev:
            return
        metrics = known if known is not None else evaluate_tts(policy, dev, renderer, decode, f"{stage} dev")[0]
        state["dev"][str(step)] = metrics
        if state["best_score"] is None or -metrics["wer"] > state["best_score"]:
            state.update(best_score=-metrics["wer"], best_step=step)
            checkpoint.save_weights(best_path, policy)
        if logger:
            logger.log({f"dev_{k}": v for k, v in metrics.items()}, step=step, stage=stage)

    if state["best_score"] is None:
        evaluate_dev(initial_dev)
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, unit="step")
    while step < cfg.max_steps:
        t0 = time.time()
        batch = rank_batch(prompts, step, cfg.prompts_per_step, cfg.seed)  # whole groups per rank
        texts = [t for t in batch for _ in range(g)]
        policy.eval()
        with torch.no_grad():
            ids = policy.generate(policy.encode(batch).repeat(g), cfg.max_new_tokens,
                                  temperature=cfg.temperature, top_k=cfg.top_k)
        mask = policy.completion_mask(ids)
        metrics: dict[str, float] = {"rollout_s": time.time() - t0, "tokens": mask.sum(1).mean().item(),
                                     "unfinished": float((~(ids == policy.eos_token_id).any(1)).sum())}
        advantages = torch.zeros(ids.shape[0])
        keep = torch.ones(ids.shape[0], dtype=torch.bool)
        if cfg.uses_rewards:
            t1 = time.time()
            rewards, hyps = _rewards(policy, ids, texts, [i // g for i in range(len(texts))], renderer, reward_fn)
            invalid = ~torch.isfinite(rewards)
            state["invalid_rewards"] += int(accelerator.reduce(invalid.sum(), "sum"))
            rewards = torch.where(invalid, torch.zeros_like(rewards), rewards)
            advantages = group_advantages(rewards, g, scale=cfg.scale_rewards)
            keep = ~invalid
            metrics.update(render_s=time.time() - t1, reward=rewards[keep].mean().item() if keep.any() else math.nan,
                           rollout_wer=float(np.mean([sentence_wer(t, h) for t, h in zip(texts, hyps)])),
                           positive_advantage=float((advantages[keep] > 0).sum()), **reward_fn.metrics())
        t2 = time.time()
        # a rank with nothing valid trains on its first sample with weight 0 (its backward joins DDP's)
        weight = rank_weight(accelerator, keep.sum())
        sel = keep.nonzero().squeeze(1) if keep.any() else torch.zeros(1, dtype=torch.long)
        text_ids = text_mask = None
        if token2text is not None and cfg.uses_diffro:
            text_ids, text_mask = token2text.text_targets([texts[i] for i in sel.tolist()])
        policy.train()
        enc = policy.encode([texts[i] for i in sel.tolist()])
        ids_k, mask_k = ids[sel], mask[sel]
        adv_k = advantages[sel].to(ids_k.device)
        ref_logits = _reference_logits(model, policy, ref_policy, enc, ids_k, mask_k)
        old_logp = None
        if cfg.num_iterations > 1 and cfg.uses_rewards:
            with torch.no_grad():
                old_logp = token_logps(model(enc, ids_k, mask_k, return_logits=True), ids_k)
        for _ in range(cfg.num_iterations):
            logits = model(enc, ids_k, mask_k, return_logits=True)
            loss, stats = rl_loss(logits, ref_logits, ids_k, mask_k, adv_k, token2text, text_ids, text_mask, cfg,
                                  old_logp)
            accelerator.backward(loss * weight)
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()
        step += 1
        metrics = mean_over_ranks(accelerator, {**metrics, "loss": (loss * weight).item(), **stats})
        metrics.update(update_s=time.time() - t2, step_s=time.time() - t0)
        state["train_s"] += metrics["step_s"]
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if logger:
            logger.log(metrics, step=step, stage=stage)
        if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, policy, optimizer, scheduler, state)
    bar.close()
    evaluate_dev()
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if dev and state["best_step"] != step:
        checkpoint.load_weights(best_path, policy)
    result = {"best_score": state["best_score"], "best_step": state["best_step"], "steps": step,
              "train_s": round(state["train_s"], 1), "step_s": round(state["train_s"] / max(1, step), 3),
              "invalid_rewards": state["invalid_rewards"], "dev": state["dev"]}
    write_json(out_dir / "result.json", result)
    return result
