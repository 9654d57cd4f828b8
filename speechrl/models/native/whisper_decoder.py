"""Whisper's decoder one token at a time, for sampling G completions per clip.

:class:`SharedClipDecoder` runs the layers of a ``WhisperDecoder`` (its own modules, so LoRA layers
injected by peft take part) on a KV cache made for GRPO rollouts:

- **cross-attention on the clip's keys/values**: they are projected once per clip ([B, heads, S, d])
  and the queries of a clip's G rows attend to them in one matmul ([B, heads, G·q, d] against
  [B, heads, S, d]) instead of a copy of the clip's 1,500 frames per row. Rows must come as
  ``Encoded.repeat(G)`` makes them (clip i → rows i·G … i·G+G−1); any other row → clip map
  (``Encoded.select``) gathers per-row copies, as before;
- **self-attention into preallocated buffers** [N, heads, prefix + max_new_tokens, d], written in place
  every step (no concatenation).

It computes what ``WhisperDecoder.forward`` computes in eval mode — the same modules in the same order,
the query scaled before the product as Hugging Face does — so greedy tokens and the teacher-forced
log-probs of :meth:`~speechrl.models.native.whisper.WhisperPolicy.completion_logps` agree with it
(tests: ``tests/test_native.py``, ``tests/test_whisper_ct2.py``). No dropout is applied: rollouts run in
eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cross_keys_values(decoder: nn.Module, hidden: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each decoder layer's cross-attention keys and values of the encoder output ``hidden`` [B, S, D],
    once per clip: [(keys [B, heads, S, d], values [B, heads, S, d]), ...], contiguous."""
    out = []
    for layer in decoder.layers:
        attn = layer.encoder_attn
        shape = (hidden.shape[0], -1, attn.num_heads, attn.head_dim)
        out.append(tuple(proj(hidden).view(shape).transpose(1, 2).contiguous() for proj in (attn.k_proj, attn.v_proj)))
    return out


def group_size(source: Tensor, clips: int) -> int:
    """G when rows are ``Encoded.repeat(G)`` of ``clips`` clips (row r → clip r // G), else 0."""
    rows = source.shape[0]
    if rows % clips:
        return 0
    g = rows // clips
    expected = torch.arange(clips, device=source.device).repeat_interleave(g)
    return g if torch.equal(source, expected) else 0


def shared_kv_attention(query: Tensor, keys: Tensor, values: Tensor) -> Tensor:
    """Attention of ``query`` [N, heads, q, d] (already scaled) on keys/values [B, heads, S, d] shared by
    consecutive groups of N / B rows, without copying them per row: the G rows' queries of a clip
    become one [heads, G·q, d] block. Returns [N, heads, q, d]."""
    n, heads, q, d = query.shape
    b = keys.shape[0]
    if n == b:
        return F.scaled_dot_product_attention(query, keys, values, scale=1.0)
    g = n // b
    grouped = query.view(b, g, heads, q, d).transpose(1, 2).reshape(b, heads, g * q, d)
    out = F.scaled_dot_product_attention(grouped, keys, values, scale=1.0)
    return out.view(b, heads, g, q, d).transpose(1, 2).reshape(n, heads, q, d)


class SharedClipDecoder:
    """A KV-cached Whisper decoder for rows that share their clips' cross-attention keys/values.

    ``decoder``: the ``WhisperDecoder``; ``hidden`` [B, S, D]: the encoder output of B clips; ``source``
    [N]: each row's clip; ``max_len``: prefix + new tokens at most. Call it as
    :func:`speechrl.models.decoding.decode_cached`'s step: first on the prefix ids [N, P], then on one
    token per row, with the attention mask so far and the positions; it returns the final hidden
    state of each row's last position [N, D]."""

    def __init__(self, decoder: nn.Module, hidden: Tensor, source: Tensor, max_len: int):
        self.decoder = decoder
        self.cross = cross_keys_values(decoder, hidden)
        if not group_size(source, hidden.shape[0]):  # rows in another order: per-row copies
            self.cross = [(k[source], v[source]) for k, v in self.cross]
        attn = decoder.layers[0].self_attn
        shape = (source.shape[0], attn.num_heads, max_len, attn.head_dim)
        self.keys = [hidden.new_empty(shape) for _ in decoder.layers]
        self.values = [hidden.new_empty(shape) for _ in decoder.layers]
        self.length = 0
        self.padded = False

    def _self_attention(self, i: int, attn: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
        start, end = self.length, self.length + x.shape[1]
        self.keys[i][:, :, start:end] = heads(attn.k_proj(x), attn)
        self.values[i][:, :, start:end] = heads(attn.v_proj(x), attn)
        query = heads(attn.q_proj(x) * attn.scaling, attn)
        keys, values = self.keys[i][:, :, :end], self.values[i][:, :, :end]
        if not self.padded:  # every key so far is a real token: plain causal attention
            return F.scaled_dot_product_attention(query, keys, values, is_causal=start == 0 and end > 1, scale=1.0)
        allowed = mask[:, None, None, :end].bool()
        if start == 0:  # the prefix: causal; a padding position attends to itself (never read by a real one)
            causal = torch.ones(end, end, dtype=torch.bool, device=x.device).tril()
            allowed = (allowed & causal) | torch.eye(end, dtype=torch.bool, device=x.device)
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=allowed, scale=1.0)

    @torch.no_grad()
    def __call__(self, ids: Tensor, mask: Tensor, positions: Tensor) -> Tensor:
        dec = self.decoder
        if self.length == 0:
            self.padded = not bool(mask.all())
        x = dec.embed_tokens(ids) + dec.embed_positions.weight[positions]
        for i, layer in enumerate(dec.layers):
            attn = layer.self_attn
            x = x + attn.out_proj(merge(self._self_attention(i, attn, layer.self_attn_layer_norm(x), mask)))
            cross = layer.encoder_attn
            query = heads(cross.q_proj(layer.encoder_attn_layer_norm(x)) * cross.scaling, cross)
            x = x + cross.out_proj(merge(shared_kv_attention(query, *self.cross[i])))
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        self.length += ids.shape[1]
        return dec.layer_norm(x[:, -1])


def heads(x: Tensor, attn: nn.Module) -> Tensor:
    """[N, q, D] → [N, heads, q, d]."""
    return x.view(*x.shape[:2], attn.num_heads, attn.head_dim).transpose(1, 2)


def merge(x: Tensor) -> Tensor:
    """[N, heads, q, d] → [N, q, D]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)
