"""Per-token log-probabilities of label tokens, shared by the DPO, GRPO and DiffRO trainers.

Alignment convention (used everywhere in ``speechrl.losses``): ``logits[:, t]`` is the distribution
that scored ``labels[:, t]``. A causal LM's raw output is one step ahead of its input ids
(``logits[:, t]`` predicts ``input_ids[:, t + 1]``), so shift first with :func:`shift_for_causal_lm`.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100


def token_logps(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """log π_T(labels[n, t] | ·) from aligned logits, under the distribution sampled at temperature T.

    log π_T(y_t) = z_t[y_t] − logsumexp_k z_t[k],   z_t = logits_t / T

    A policy-gradient update must score the distribution its rollouts were sampled from, so GRPO
    passes the rollout temperature here (as TRL's ``selective_log_softmax(logits, index, temperature)``);
    T = 1 is the raw distribution (SFT, DPO, evaluation).

    Args:
        logits: ``[N, T, V]``, already aligned to ``labels`` (see module docstring).
        labels: ``[N, T]`` token ids; ``-100`` (HF ignore index) gives a log-prob of 0.
        temperature: T > 0.

    Returns:
        ``[N, T]`` float32 (float64 for float64 logits). Rows are processed one at a time and only
        that row is upcast, so peak memory is one ``[T, V]`` float32 copy, not a second ``[N, T, V]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    ignored = labels == IGNORE_INDEX
    index = labels.masked_fill(ignored, 0).unsqueeze(-1)
    rows = []
    for row_logits, row_index in zip(logits, index):
        row_logits = row_logits.to(out_dtype)
        if temperature != 1.0:
            row_logits = row_logits / temperature
        picked = row_logits.gather(-1, row_index).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows).masked_fill(ignored, 0.0)


def shift_for_causal_lm(logits: Tensor, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Align a causal LM's output with the tokens it predicts.

    Position t of a causal LM predicts token t+1, so the aligned triple is
    ``(logits[:, :-1], input_ids[:, 1:], mask[:, 1:])`` where ``mask`` is over ``input_ids``
    (1 on the completion tokens to score, 0 on prompt and padding).
    """
    return logits[:, :-1], input_ids[:, 1:], mask[:, 1:]


def sequence_logps(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """log π(y | x) = Σ_t mask_t · log π(y_t | x, y_<t), one value per row: ``[N]``.

    ``logits``/``labels``/``mask`` are aligned (``[N, T, V]``, ``[N, T]``, ``[N, T]``); see
    :func:`shift_for_causal_lm` for raw causal-LM outputs.
    """
    return (token_logps(logits, labels) * mask.to(torch.float32)).sum(-1)
