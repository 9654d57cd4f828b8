"""DiffRO (arXiv 2507.05911): differentiable reward optimisation for LLM-based TTS.

The policy's teacher-forced logits over speech tokens are relaxed with Gumbel-Softmax, embedded with a
frozen Token2Text model's embedding matrix, and the Token2Text log-likelihood of the target text is
maximised by plain back-propagation, regularised by the full-vocabulary token-level KL to the
reference policy. The caller runs the Token2Text model; these functions are the tensor pieces.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gumbel_softmax_tokens(
    logits: Tensor, tau: float = 1.0, hard: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Relaxed token samples ``[N, T, V]``:

    ỹ_t = softmax((logits_t + g_t) / τ),   g_t[k] ~ Gumbel(0, 1) i.i.d., drawn as −log(Exp(1))

    ``hard=True`` is straight-through: the forward value is one_hot(argmax(logits + g)) and the
    gradient is that of the soft ỹ. With ``generator=None`` the global RNG is used and the result is
    identical to ``torch.nn.functional.gumbel_softmax`` after the same seed; pass a
    ``torch.Generator`` for reproducible noise independent of other RNG consumers.
    """
    gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(
        generator=generator
    ).log()
    soft = ((logits + gumbels) / tau).softmax(dim=-1)
    if not hard:
        return soft
    index = soft.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(logits, memory_format=torch.legacy_contiguous_format).scatter_(-1, index, 1.0)
    return one_hot - soft.detach() + soft


def soft_embed(soft_tokens: Tensor, embedding_matrix: Tensor) -> Tensor:
    """ẽ_t = ỹ_t · E: ``[N, T, V] @ [V, D] → [N, T, D]``; equals ``E[y_t]`` for a one-hot ỹ_t."""
    return soft_tokens.to(embedding_matrix.dtype) @ embedding_matrix


def full_token_kl(logits: Tensor, ref_logits: Tensor, mask: Tensor, per_sequence: bool = False) -> Tensor:
    """Token-level full-vocabulary KL(πθ ‖ π_ref):

    KL_t   = Σ_k πθ(k|t) · (log πθ(k|t) − log π_ref(k|t))
    KL_seq = Σ_t mask_t·KL_t / Σ_t mask_t                (mean over the sequence's tokens)
    result = mean_n KL_seq(n)   (``per_sequence=True``: the ``[N]`` vector KL_seq)

    The paper writes Σ_t (a sum over tokens); the per-token mean keeps β independent of utterance
    length, so the scale differs from the paper's by the token count. A sequence with no masked
    token has KL_seq = 0. ``ref_logits`` is detached (the reference is frozen).
    """
    logp = logits.float().log_softmax(dim=-1)
    ref_logp = ref_logits.detach().float().log_softmax(dim=-1)
    per_token = (logp.exp() * (logp - ref_logp)).sum(dim=-1)
    mask = mask.to(per_token.dtype)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq if per_sequence else per_seq.mean()


def diffro_loss(
    reward_logprob: Tensor, kl: Tensor, beta: float = 0.1, sample_weight: Tensor | None = None
) -> Tensor:
    """L = mean_{i ∈ S}( −R_i + β·KL_i ),   R_i = Σ_n log P(Y_n | Y_<n, ỹ_i)  (frozen Token2Text).

    Args:
        reward_logprob: ``[N]`` R_i, differentiable w.r.t. the policy through ỹ.
        kl: ``[N]`` per-sequence KL (``full_token_kl(..., per_sequence=True)``) or a scalar.
        sample_weight: ``[N]`` bool/float selecting the samples S; None selects all. The combined
            GRPO+DiffRO trainer passes ``advantages > 0`` (Tongyi's sample filtering). With no sample
            selected the loss is an exact 0 that still back-propagates (zero gradient).
    """
    per_sample = -reward_logprob + beta * kl
    if sample_weight is None:
        return per_sample.mean()
    weight = sample_weight.to(per_sample.dtype)
    total = weight.sum()
    return (weight * per_sample).sum() / torch.where(total > 0, total, torch.ones_like(total))
