"""Direct Preference Optimization (sigmoid / conservative DPO), as used by Align-SLM (arXiv 2411.01834).

Sequence log-probs come from :func:`speechrl.losses.logps.sequence_logps` (re-exported here) over the
continuation tokens only; the prompt is masked out.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from speechrl.losses.logps import sequence_logps, shift_for_causal_lm, token_logps

__all__ = ["dpo_loss", "dpo_metrics", "sequence_logps", "shift_for_causal_lm", "token_logps"]


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
    chosen_tokens: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sigmoid DPO loss on sequence log-probs (all inputs ``[N]``).

    Δ = (log πθ(y_w|x) − log π_ref(y_w|x)) − (log πθ(y_l|x) − log π_ref(y_l|x))
    L = mean_n[ −(1 − ε)·log σ(β·Δ) − ε·log σ(−β·Δ) + α · (−log πθ(y_w|x) / |y_w|) ]

    ε = ``label_smoothing`` is conservative DPO (cDPO: the preference label is flipped with
    probability ε); ε = 0 is the original DPO. Note TRL 1.16's ``loss_type="sigmoid"`` ignores
    ``label_smoothing``; its ``"aot"`` loss on a single pair has exactly the form above.

    α = ``nll_weight`` adds the chosen continuation's per-token NLL (RPO, Pang et al. 2024; TRL's
    ``rpo_alpha``): plain DPO can raise the margin by pushing *both* sides down and move the mass to
    continuations neither side contains (with a likelihood-based judge: repetition); the NLL term
    keeps the chosen side likely. ``chosen_tokens`` ``[N]`` = |y_w|, required when α > 0. TRL
    divides the batch's summed NLL by its total chosen tokens instead; per-sequence normalisation
    keeps the loss a mean over pairs, so gradient accumulation over micro-batches stays exact.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``; the implicit rewards β·(log πθ − log π_ref)
        are ``[N]`` and detached.
    """
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    logits = beta * (chosen_logratios - rejected_logratios)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    if nll_weight:
        if chosen_tokens is None:
            raise ValueError("nll_weight > 0 needs chosen_tokens (the chosen continuations' lengths)")
        losses = losses - nll_weight * policy_chosen / chosen_tokens.clamp(min=1)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses.mean(), chosen_rewards, rejected_rewards


def dpo_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    """``reward_accuracy`` = share of pairs with chosen reward strictly above rejected (ties count 0,
    as in TRL); ``margin`` = mean(chosen − rejected). Align-SLM picks its checkpoint by dev accuracy."""
    return {
        "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        "margin": (chosen_rewards - rejected_rewards).mean(),
    }
