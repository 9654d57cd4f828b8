"""Pieces every trainer shares: accelerator, optimizer + schedule, deterministic batch order, tokens,
and the weight that makes DDP's gradient average a global-batch mean."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from speechrl.models.policy import pad_completions


def make_accelerator(seed: int) -> Accelerator:
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(seed)
    return accelerator


def make_optimizer(param_groups: list[dict], total_steps: int, warmup_steps: int, weight_decay: float = 0.0,
                   schedule: str = "linear"):
    """AdamW and its schedule: linear warm-up, then ``linear`` decay to 0 at ``total_steps`` or a
    ``constant`` rate."""
    groups = [g for g in param_groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    if schedule == "constant":
        return optimizer, get_constant_schedule_with_warmup(optimizer, warmup_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, warmup_steps + 1))
    return optimizer, scheduler


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """The example indices of batch ``step``: epoch-wise permutations, a pure function of the step,
    so a resumed run sees exactly the batches an uninterrupted one would."""
    per_epoch = max(1, n // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng(seed * 100_003 + epoch).permutation(n)
    return perm[i * batch_size:(i + 1) * batch_size].tolist()


def rank_batch(items, step: int, batch_size: int, seed: int) -> list:
    """This rank's share of global batch ``step`` (all of it on one process; see :func:`batch_indices`)."""
    from speechrl.parallel import rank_share

    return rank_share([items[i] for i in batch_indices(step, len(items), batch_size, seed)])


def reference_tokens(policy: Any, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target completions: the reference text's tokens (cut to ``max_tokens − 1``) + the policy's EOS,
    right-padded. The text is written as the policy's own outputs begin (``policy.completion_prefix``:
    Whisper's transcripts start with a space, without which a correct transcript costs 0.77 nats/token
    instead of 0.10 on tiny.en)."""
    prefix = getattr(policy, "completion_prefix", "")
    tok = policy.tokenizer
    ids = [tok(prefix + t, add_special_tokens=False)["input_ids"][: max_tokens - 1] + [policy.eos_token_id]
           for t in texts]
    return pad_completions(ids, policy.pad_token_id)


def rank_weight(accelerator: Accelerator, count: torch.Tensor | float) -> torch.Tensor:
    """w = world · n_rank / Σ_ranks n, for a loss that is a mean over this rank's ``n_rank`` items
    (sequences or tokens). DDP averages gradients over ranks, so Σ_r w_r·mean_r / world is the mean over
    all items of the global batch — what one process with the whole batch computes. 1 on one process;
    0 on a rank with no items (it still runs its backward, so the all-reduce never waits on it)."""
    count = torch.as_tensor(count, dtype=torch.float32, device=accelerator.device)
    total = accelerator.reduce(count, "sum")
    return count * accelerator.num_processes / total.clamp(min=1e-12)


def mean_over_ranks(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (one all-reduce; every rank must pass the same keys)."""
    if accelerator.num_processes == 1 or not metrics:
        return {k: float(v) for k, v in metrics.items()}
    values = accelerator.reduce(torch.tensor([float(metrics[k]) for k in sorted(metrics)], device=accelerator.device), "mean")
    return dict(zip(sorted(metrics), values.tolist()))
