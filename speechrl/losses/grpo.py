"""GRPO-family losses: group advantages, k3 KL, DAPO's soft overlong penalty, and the clipped
surrogate with the ``grpo`` (DeepSeekMath, arXiv 2402.03300) / ``dapo`` / ``bnpo`` (DAPO, arXiv
2503.14476) / ``dr_grpo`` (Dr. GRPO, arXiv 2503.20783) normalisations, plus IBM's mixed-policy rows
(speech GRPO, arXiv 2509.16990: the ground-truth reference as an unclipped off-policy sample).

Shapes: N completions in consecutive groups of G (group k = rows k·G .. k·G+G−1), T completion
tokens; ``mask`` is ``[N, T]`` (1 on real completion tokens). Log-probs are per token, ``[N, T]``,
and must be finite on masked-out positions too (``token_logps`` gives 0 at ignored labels).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossType = Literal["grpo", "dapo", "bnpo", "dr_grpo"]


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    rewards = rewards if rewards.is_floating_point() else rewards.to(torch.float32)
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: Tensor, group_size: int, scale: Literal["std", "none"] = "std", eps: float = 1e-4
) -> Tensor:
    """Group-relative advantages, ``[N]``.

    "std":  Â_i = (r_i − mean_g(r)) / (std_g(r) + eps)
    "none": Â_i = r_i − mean_g(r)                      (Dr. GRPO)

    std_g is the **unbiased** (Bessel, divide by G−1) standard deviation, as TRL 1.16's GRPO default
    (``scale_rewards="group"``, ``trl.trainer.utils.nanstd``); eps = 1e-4 as TRL. A NaN reward is a
    missing one (an unscored sample): mean and std are over the group's valid rewards only, and the
    missing row gets Â = 0. With fewer than two valid rewards the std is taken as 0.
    """
    grouped = _grouped(rewards, group_size)
    valid = ~torch.isnan(grouped)
    count = valid.sum(dim=1, keepdim=True)
    filled = torch.where(valid, grouped, torch.zeros_like(grouped))
    mean = filled.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, grouped - mean, torch.zeros_like(grouped))
    if scale == "none":
        return centred.reshape(-1)
    if scale != "std":
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    var = (centred ** 2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = torch.where(count > 1, var.sqrt(), torch.zeros_like(var))
    return (centred / (std + eps)).reshape(-1)


def zero_variance_groups(rewards: Tensor, group_size: int) -> Tensor:
    """``[N // G]`` bool, True where every valid (non-NaN) reward in the group is equal: such a group
    has Â = 0 for all its rows and gives no gradient. DAPO's dynamic sampling drops these groups."""
    grouped = _grouped(rewards, group_size)
    valid = ~torch.isnan(grouped)
    hi = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(dim=1)
    lo = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(dim=1)
    return (valid.sum(dim=1) < 2) | (hi == lo)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(πθ ‖ π_ref) on tokens sampled from πθ (always ≥ 0):

    KL_t = π_ref/πθ − log(π_ref/πθ) − 1 = exp(ref_logp − logp) − (ref_logp − logp) − 1
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def soft_overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO's soft overlong punishment R_len, ``[N]`` float, to add to the task reward:

    R_len(|y|) = 0                     if |y| ≤ L − C
               = ((L − C) − |y|) / C   if L − C < |y| ≤ L
               = −1                    if |y| > L
    with L = ``max_len``, C = ``cache_len``.
    """
    lengths = lengths.to(torch.float32)
    soft_start = max_len - cache_len
    ramp = (soft_start - lengths) / cache_len
    penalty = torch.where(lengths <= soft_start, torch.zeros_like(lengths), ramp)
    return torch.where(lengths > max_len, torch.full_like(lengths, -1.0), penalty)


def _check_inputs(logp: Tensor, old_logp: Tensor | None, ref_logp: Tensor | None, advantages: Tensor,
                  mask: Tensor, off_policy: Tensor | None) -> None:
    if logp.dim() != 2 or not logp.is_floating_point():
        raise ValueError(f"logp must be a float [N, T] tensor, got {tuple(logp.shape)} {logp.dtype}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; logp has {tuple(logp.shape)} (one value per token)")
    for name, t in (("advantages", advantages), ("off_policy", off_policy)):
        if t is not None and t.shape != logp.shape[:1]:
            raise ValueError(f"{name} must be [N] = [{logp.shape[0]}] (one per completion), got {tuple(t.shape)}")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor | None,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: LossType = "grpo",
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    max_completion_length: int | None = None,
    off_policy: Tensor | None = None,
    kl_importance_weighted: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped GRPO surrogate with token-level importance ratios; returns ``(loss, stats)``.

    s_{i,t} = πθ(o_{i,t}) / π_old(o_{i,t}) = exp(logp − old_logp)
    l_{i,t} = min(s·Â_i, clip(s, 1 − ε_low, 1 + ε_high)·Â_i)
    x_{i,t} = l_{i,t} − β·KL_{i,t}                  (k3 KL against ``ref_logp``; see :func:`k3_kl`)

    loss = −J with J, by ``loss_type``:
      "grpo":          (1/N) Σ_i (1/|o_i|) Σ_t x_{i,t}             (DeepSeekMath; N = all rows)
      "dapo", "bnpo":  Σ_i Σ_t x_{i,t} / Σ_i |o_i|                (token mean over this batch)
      "dr_grpo":       Σ_i Σ_t x_{i,t} / (N · L),  L = ``max_completion_length`` (required)

    Args:
        logp: ``[N, T]`` log πθ of the sampled tokens (with grad).
        old_logp: ``[N, T]`` log π_old of the rollout policy, or None for ``logp.detach()``: with μ = 1
            inner iteration s ≡ 1, clipping is inactive and the gradient is the plain policy
            gradient −(1/norm) Σ Â_i ∇log πθ.
        ref_logp: ``[N, T]`` log π_ref, or None. The KL term is skipped when ``beta == 0`` or this is None.
        advantages: ``[N]``, one per completion, shared by its tokens (:func:`group_advantages`).
        mask: ``[N, T]`` float/bool, 1 on completion tokens.
        eps_high: clip-higher bound; None means ``eps_low`` (DAPO uses 0.2 / 0.28).
        off_policy: ``[N]`` bool, True on mixed-policy rows (IBM): the ground-truth reference sample.
            Its ratio is πθ/π_φ with π_φ ≡ 1, i.e. s = exp(logp), and it is **never clipped**
            (l = s·Â). It gets **no KL term**: k3 estimates KL(πθ ‖ π_ref) only on tokens sampled
            from πθ, which the reference's tokens are not.
        kl_importance_weighted: multiply the KL by s (on-policy rows only), which makes its gradient the
            unbiased reverse-KL gradient (DeepSeek-V3.2). TRL 1.16 does this by default
            (``use_bias_correction_kl=True``); off here to follow the formula above. The loss value is
            unchanged when s ≡ 1, the gradient is not.

    Stats (detached scalars): ``clip_frac_low`` = share of on-policy tokens with s < 1 − ε_low and
    Â < 0, ``clip_frac_high`` = s > 1 + ε_high and Â > 0 (the tokens whose gradient clipping zeroes),
    ``ratio`` = mean s over on-policy tokens, ``kl`` = mean KL term over on-policy tokens (k3, times s
    when ``kl_importance_weighted``, as TRL logs it; present whenever ``ref_logp`` is given, even with
    β = 0). Only token-level ratios are implemented (TRL's ``importance_sampling_level="token"``).

    Shapes are checked: a ``[N, 1]`` advantage or a ``[N, T']`` mask would otherwise broadcast into a
    wrong loss without a word.
    """
    _check_inputs(logp, old_logp, ref_logp, advantages, mask, off_policy)
    eps_high = eps_low if eps_high is None else eps_high
    mask = mask.to(logp.dtype)
    if old_logp is None:
        old_logp = logp.detach()
    adv = advantages.to(logp.dtype).unsqueeze(1)
    if off_policy is None:
        off_policy = torch.zeros(logp.shape[0], dtype=torch.bool, device=logp.device)
    off_rows = off_policy.to(torch.bool).unsqueeze(1)

    log_ratio = torch.where(off_rows, logp, logp - old_logp)
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.where(off_rows, ratio, ratio.clamp(1.0 - eps_low, 1.0 + eps_high))
    per_token = torch.min(ratio * adv, clipped_ratio * adv)

    on_rows = (~off_rows).to(logp.dtype)
    kl = k3_kl(logp, ref_logp) * on_rows if ref_logp is not None else None
    if kl is not None and kl_importance_weighted:
        kl = kl * ratio
    if kl is not None and beta != 0.0:
        per_token = per_token - beta * kl

    if loss_type == "grpo":
        objective = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type in ("dapo", "bnpo"):
        objective = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length (the constant normaliser L)")
        objective = (per_token * mask).sum() / (logp.shape[0] * max_completion_length)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected grpo, dapo, bnpo or dr_grpo")

    with torch.no_grad():
        on_mask = mask * (~off_rows).to(mask.dtype)
        stats = {
            "clip_frac_low": _masked_mean(((ratio < 1.0 - eps_low) & (adv < 0)).to(mask.dtype), on_mask),
            "clip_frac_high": _masked_mean(((ratio > 1.0 + eps_high) & (adv > 0)).to(mask.dtype), on_mask),
            "ratio": _masked_mean(ratio, on_mask),
        }
        if kl is not None:
            stats["kl"] = _masked_mean(kl, on_mask)
    return -objective, stats
