"""Text-side feedback on a continuation's transcript: self-repetition (auto-BLEU) and perplexity.

**auto-BLEU** (arXiv 2411.01834; Lakhotia et al. 2021's repetition measure): with ``w = normalize(text).split()``
and its n-grams ``g_1 … g_m`` (``m = len(w) − n + 1``),

    auto_bleu(text, n) = (1/m) · Σ_i 1[ g_i = g_j for some j ≠ i ]

— the share of n-gram positions whose n-gram also occurs at another position of the same transcript.
Text is compared after :func:`speechrl.text.normalize` (lowercase, punctuation dropped, numbers
spelled out), so "The cat. the cat" repeats. Align-SLM rejects a continuation outright when its
bigram auto-BLEU exceeds δ = 0.1. Edge case: fewer than two n-grams (``m < 2``, e.g. an empty or
one-word transcript for n = 2) cannot repeat and give 0.0.

**Continuation perplexity** (Align-SLM's PPL feedback, and GenPPL): the perplexity of the
continuation text given the prompt text under a text LM, over the continuation tokens only,

    PPL(c | p) = exp( −(1/|c|) · Σ_t log π(c_t | p, c_<t) ).

Prompt and continuation are tokenized separately and concatenated, with one space put between them
when neither side has whitespace at the seam, so the continuation's words tokenize as in running
text. An empty prompt is replaced by the tokenizer's BOS (or EOS) token so that the first
continuation token has a context. Prompts too long for ``max_length`` lose tokens from their start;
the continuation is never cut (a continuation longer than ``max_length − 1`` tokens is an error).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

import torch

from speechrl.losses.logps import token_logps
from speechrl.text import normalize

__all__ = ["auto_bleu", "ngrams", "continuation_perplexity", "continuation_nll"]


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of ``words`` in order (empty when there are fewer than ``n`` words)."""
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def auto_bleu(text: str, n: int = 2) -> float:
    """Share of the transcript's n-grams that also occur elsewhere in it (see the module docstring).

    >>> auto_bleu("the cat sat on the cat")   # bigrams: the·cat ×2 of 5
    0.4
    """
    if not isinstance(text, str):
        raise TypeError(f"auto_bleu expects a transcript string, got {type(text).__name__}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    grams = ngrams(normalize(text).split(), n)
    if len(grams) < 2:
        return 0.0
    counts = Counter(grams)
    return sum(1 for g in grams if counts[g] > 1) / len(grams)


def _join_ids(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) tokenized separately, with a space at a bare seam."""
    if prompt and continuation and not prompt[-1].isspace() and not continuation[0].isspace():
        continuation = " " + continuation
    context = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    if not context:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError("empty prompt and the tokenizer has neither a BOS nor an EOS token to start from")
        context = [start]
    return context, tokenizer.encode(continuation, add_special_tokens=False)


def continuation_nll(lm: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str],
                     batch_size: int = 8, max_length: int | None = None) -> list[tuple[float, int]]:
    """``(Σ_t −log π(c_t | p, c_<t), |c|)`` per sample, in nats over the continuation tokens.

    Batched with right padding, no gradients, the model in eval mode for the call (its mode is
    restored after). Raises ``ValueError`` for mismatched lengths or an empty continuation.
    """
    if isinstance(prompts, str) or isinstance(continuations, str):
        raise TypeError("prompts and continuations must be lists of strings, not a single string")
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = max_length or getattr(lm.config, "max_position_embeddings", None) or 2048
    rows: list[tuple[list[int], int]] = []  # (ids, number of context tokens)
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if not isinstance(p, str) or not isinstance(c, str):
            raise TypeError(f"sample {i}: prompt and continuation must be str")
        if not c.strip():
            raise ValueError(f"sample {i}: empty continuation (its perplexity is undefined)")
        context, cont = _join_ids(tokenizer, p, c)
        if len(cont) > limit - 1:
            raise ValueError(f"sample {i}: continuation of {len(cont)} tokens does not fit max_length={limit}")
        context = context[-(limit - len(cont)):]
        rows.append((context + cont, len(context)))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(lm.parameters()).device
    out: list[tuple[float, int]] = []
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                width = max(len(ids) for ids, _ in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                labels = torch.full((len(chunk), width), -100, dtype=torch.long)
                for r, (seq, n_ctx) in enumerate(chunk):
                    ids[r, :len(seq)] = torch.tensor(seq)
                    attn[r, :len(seq)] = 1
                    labels[r, n_ctx:len(seq)] = torch.tensor(seq[n_ctx:])
                logits = lm(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
                logps = token_logps(logits[:, :-1], labels[:, 1:].to(device))
                counts = (labels[:, 1:] != -100).sum(-1)
                for total, n in zip((-logps.sum(-1)).tolist(), counts.tolist()):
                    out.append((float(total), int(n)))
    finally:
        lm.train(was_training)
    return out


def continuation_perplexity(lm: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str],
                            batch_size: int = 8, max_length: int | None = None) -> list[float]:
    """PPL(c | p) per sample (see the module docstring); also GenPPL of generated continuations."""
    return [math.exp(total / n) for total, n in
            continuation_nll(lm, tokenizer, prompts, continuations, batch_size, max_length)]
