"""Losses as pure functions on tensors: DPO, the GRPO family with KL estimators, and DiffRO.

Every function's docstring carries its formula; ``tests/test_losses_*.py`` check each against
hand-computed values and, where TRL has the same loss, against TRL 1.16 on the same tensors.
"""

from speechrl.losses.diffro import diffro_loss, full_token_kl, gumbel_softmax_tokens, soft_embed
from speechrl.losses.dpo import dpo_loss, dpo_metrics
from speechrl.losses.grpo import (
    group_advantages,
    grpo_loss,
    k3_kl,
    soft_overlong_penalty,
    zero_variance_groups,
)
from speechrl.losses.logps import sequence_logps, shift_for_causal_lm, token_logps

__all__ = [
    "diffro_loss",
    "dpo_loss",
    "dpo_metrics",
    "full_token_kl",
    "group_advantages",
    "grpo_loss",
    "gumbel_softmax_tokens",
    "k3_kl",
    "sequence_logps",
    "shift_for_causal_lm",
    "soft_embed",
    "soft_overlong_penalty",
    "token_logps",
    "zero_variance_groups",
]
