"""What the trainers need from a speech policy, whatever its architecture.

A policy maps (audio, text prompt) → text. Our own :class:`~speechrl.models.speech_lm.SpeechLM`
(audio front end + projector + HF causal LM) and the native Hugging Face speech LMs (Qwen2-Audio,
Granite Speech, Whisper; :mod:`speechrl.models.native`) all provide the same four methods, so SFT,
GRPO and evaluation are written once:

``encode(batch) -> Encoded``
    Runs the audio encoder **once** per prompt. The result is what every later call consumes.
``Encoded.repeat(n)``
    The same encoding for ``n`` samples per prompt (``repeat_interleave``; nothing recomputed).
``generate(enc, max_new_tokens, do_sample, temperature, top_p) -> LongTensor[N, T]``
    Completion token ids, right-padded with ``pad_token_id`` after the end-of-sequence token.
``completion_logps(enc, completion_ids, completion_mask, temperature=1.0) -> FloatTensor[N, T]``
    Per-token log-probabilities of the completion tokens given the prompt (teacher forcing), under
    the distribution at ``temperature`` (logits / T): GRPO scores its rollouts at the temperature
    they were sampled at.

plus ``tokenizer`` (``decode``), ``eos_token_id`` and ``pad_token_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class PromptBatch:
    """Prompts before encoding: one audio input (features or waveform) and one text prompt each."""

    audio: list[Any]
    text: list[str]


@dataclass
class Encoded:
    """An encoded prompt batch: named tensors with the batch in dimension 0 (``None`` allowed)."""

    tensors: dict[str, torch.Tensor | None]
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor | None:
        return self.tensors[key]

    @property
    def batch_size(self) -> int:
        return next(t.shape[0] for t in self.tensors.values() if t is not None)

    @property
    def device(self) -> torch.device:
        return next(t.device for t in self.tensors.values() if t is not None)

    def repeat(self, n: int) -> "Encoded":
        """Each prompt ``n`` times in a row (prompt i → rows i·n … i·n+n−1), without re-encoding."""
        if n == 1:
            return self
        return Encoded({k: None if t is None else t.repeat_interleave(n, dim=0) for k, t in self.tensors.items()},
                       dict(self.extra))

    def select(self, index: torch.Tensor) -> "Encoded":
        """The rows ``index`` (e.g. the samples kept after dynamic sampling)."""
        return Encoded({k: None if t is None else t[index.to(t.device)] for k, t in self.tensors.items()},
                       dict(self.extra))

    def detach(self) -> "Encoded":
        return Encoded({k: None if t is None else t.detach() for k, t in self.tensors.items()}, dict(self.extra))


class Policy(Protocol):
    tokenizer: Any
    eos_token_id: int
    pad_token_id: int

    def encode(self, batch: PromptBatch) -> Encoded: ...

    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, return_logps: bool = False) -> Any: ...

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor,
                         completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor: ...


def left_pad_embeds(rows: list[torch.Tensor]) -> Encoded:
    """Prompt embedding rows ``[L_i, D]`` → a left-padded :class:`Encoded` (``embeds`` ``[N, L, D]``,
    ``mask`` ``[N, L]``): every row's next token sits at the same column for generation and scoring."""
    width = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        embeds[i, width - r.shape[0]:] = r
        mask[i, width - r.shape[0]:] = 1
    return Encoded({"embeds": embeds, "mask": mask})


def left_pad_ids(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt id rows → left-padded ``(ids [N, L], mask [N, L])`` (long): every row's next token sits at
    the same column, as :func:`left_pad_embeds` does for embeddings."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def generated_logps(out: Any, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π_T(o_t) of the generated tokens ``ids`` [N, T] under the next-token distribution at the
    sampling ``temperature`` (logits / T, no top-p/k truncation: what teacher forcing computes with the
    same temperature), from a HF ``generate`` output made with ``output_logits=True,
    return_dict_in_generate=True`` (its ``logits`` are the raw, unprocessed ones)."""
    from speechrl.losses.logps import token_logps

    logits = torch.stack(out.logits, 1)[:, -ids.shape[1]:]
    return token_logps(logits.float(), ids, temperature)


def completion_mask(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 for every token up to and including the first EOS of each row, 0 after it."""
    is_eos = ids == eos_token_id
    seen_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~seen_before).float()


def pad_completions(token_lists: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of ids → (ids [N, T], mask [N, T])."""
    width = max(1, max((len(t) for t in token_lists), default=1))
    ids = torch.full((len(token_lists), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width))
    for i, toks in enumerate(token_lists):
        ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        mask[i, : len(toks)] = 1.0
    return ids, mask


def decode(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Completion texts, without special tokens, cut at the mask."""
    return [tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True).strip()
            for row, m in zip(ids, mask)]

