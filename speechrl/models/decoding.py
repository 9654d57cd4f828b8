"""Token-by-token decoding with a KV cache, and the one top-k / top-p sampler, for every hand-written
decoder here (the TTS LM, the unit LM, Token2Text, the Whisper policy; the decoder-only speech policies
use Hugging Face ``generate``).

    filter_logits(logits, top_k, top_p)                        → logits, removed tokens at −∞
    sample_next(logits, temperature, top_k, top_p, generator)   → one token per row [N]
    decode_cached(step, prompt, mask, next_inputs, pick, max_new_tokens, eos_id) → tokens [N, T]

Sampling is temperature, then top-k, then nucleus filtering, then one inverse-CDF draw per row: a
uniform u on [0, total mass) from the given generator and the first token whose cumulative
probability exceeds u, i.e. token i with probability p_i exactly (up to rounding). It is the
distribution ``torch.multinomial`` draws from, at one random number per row instead of
``multinomial``'s one per vocabulary entry (its exponential race over 51,864 Whisper tokens was the
largest cost of sampling). A seeded generator gives the same tokens on every call.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["filter_logits", "sample_next", "decode_cached"]

# (inputs, attention mask, position ids, KV cache) → logits [N, V] of each row's last position
Step = Callable[[Tensor, Tensor, Tensor, Any], Tensor]


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Top-k then nucleus (top-p) filtering: removed logits become −∞ (the best one always stays).
    ``top_k`` 0 (or ≥ the vocabulary) and ``top_p`` outside (0, 1) leave the logits as they are."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # mass before this token already exceeds top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row of ``logits`` [N, V]: the argmax when ``temperature <= 0``, else a draw from
    the tempered, top-k/top-p-filtered distribution."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits if temperature == 1.0 else logits / temperature, top_k, top_p)
    weights = (logits - logits.amax(-1, keepdim=True)).exp()  # softmax up to its normalization; −∞ → 0
    cdf = weights.cumsum(-1, dtype=torch.float64)  # float64: the tail of a 50k vocabulary keeps its mass
    u = torch.rand((logits.shape[0], 1), generator=generator, dtype=torch.float64, device=logits.device) * cdf[:, -1:]
    # u < total, so the first index with cdf > u exists and its token has p > 0 (cdf rose there)
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


@torch.no_grad()
def decode_cached(step: Step, prompt: Tensor, mask: Tensor, next_inputs: Callable[[Tensor], Tensor],
                  pick: Callable[[Tensor, int], Tensor], max_new_tokens: int, eos_id: int | None = None,
                  cache: Any = None) -> Tensor:
    """Up to ``max_new_tokens`` tokens per row ``[N, T]`` after left-padded prompts, one forward pass a
    token with a KV cache.

    ``step`` runs the model once: first on ``prompt`` (ids ``[N, P]`` or embeddings ``[N, P, D]``) with
    its ``mask`` ``[N, P]``, then on ``next_inputs(tokens)`` (the inputs ``[N, 1, ...]`` of the tokens
    just picked). ``pick(logits, t)`` chooses new token ``t`` of every row (e.g. :func:`sample_next`).
    With ``eos_id``, a row that has picked EOS keeps EOS and decoding stops once every row has.
    ``cache``: the model's KV cache (default a fresh ``DynamicCache``)."""
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = step(prompt, mask, positions, cache)
    pos = positions[:, -1:]
    done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    out: list[Tensor] = []
    for t in range(max_new_tokens):
        nxt = pick(logits, t)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            done |= nxt == eos_id
        out.append(nxt)
        if t + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos + 1
        logits = step(next_inputs(nxt), mask, pos, cache)
    if not out:
        return torch.zeros((mask.shape[0], 0), dtype=torch.long, device=mask.device)
    return torch.stack(out, dim=1)
