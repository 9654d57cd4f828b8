"""TTS LM (CosyVoice2-style): text → speech tokens, an HF causal LM with a speech-token vocabulary.

Layout of one sequence (left-padded prompts, as :class:`~speechrl.models.speech_lm.SpeechLM`):

    [text tokens of the LM's tokenizer] [SOS] s_1 s_2 … s_T [EOS]
     └── the text LM's own embeddings ─┘ └── new speech embeddings ──┘

**What the LM reads** (``text_input``, :data:`TEXT_INPUTS`): ``"bpe"`` the text LM's own tokens (above);
``"phonemes"`` the text's phonemes instead (hama's G2P, :func:`~speechrl.speech.units.text_phonemes`, in
the units' own ids, through a new phoneme embedding), so synthesis becomes copying the phonemes in order
while choosing their durations; ``"both"`` the BPE tokens, then the phonemes, then SOS.

The text LM (SmolLM2-135M offline, truncated to a few decoder layers for CPU) is kept without its text
head: a new **speech head** scores the speech vocabulary only (as CosyVoice2), so policy logits, the
Gumbel-Softmax relaxation of DiffRO and the full-vocabulary KL all live on the small speech vocabulary.

**Speech tokens** (:class:`SpeechVocab`, the target-sequence design): one token per deduplicated hama
phoneme unit (50 frames/s, blanks merged into the unit before, see :mod:`speechrl.speech.units`),
carrying the unit **and a duration class** — ``token = unit_index · K + duration_class``. A sentence
is ≈30–40 tokens (frame-level repetition would be ≈150, unit + duration tokens interleaved ≈70), and
the renderer needs no more: :class:`~speechrl.speech.vocoder.PiperPhonemeVocoder` speaks the phoneme
sequence with its own duration model and uses the unit durations only for the speaking rate, so K = 7
duration classes (1, 2, 3, 4–5, 6–8, 9–13, ≥14 frames) rendered at each class's median length keep the
rate. The unit codebook is the set of units seen in training (≈45 of hama's 190 ids for English).
Embeddings are factored, ``E[u·K + k] = A[u] + B[k]``, so a rare (unit, duration) pair shares what its
unit and its duration class learned elsewhere; the head is a full linear layer.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import numpy as np
import torch
from torch import nn

from speechrl.losses.logps import token_logps
from speechrl.models.decoding import decode_cached, sample_next
from speechrl.models.hub import load_causal_lm, load_tokenizer, read_model_folder, save_model_folder
from speechrl.models.policy import Encoded, completion_mask, left_pad_embeds
from speechrl.models.speech_lm import truncate_layers
from speechrl.speech.units import BLANK_ID, WORD_BOUNDARY_ID, Units, text_phonemes

__all__ = ["SpeechVocab", "FactoredEmbedding", "TTSLM", "DURATION_EDGES", "TEXT_INPUTS", "TextInput"]

TextInput = Literal["bpe", "phonemes", "both"]
TEXT_INPUTS: tuple[str, ...] = get_args(TextInput)
"""What a TTS LM reads: the text LM's BPE tokens, the text's G2P phonemes, or both (BPE first)."""

DURATION_EDGES = (1, 2, 3, 4, 6, 9, 14)
"""Lower bounds (frames at 50 fps) of the duration classes: 1, 2, 3, 4–5, 6–8, 9–13, ≥14."""


@dataclass
class SpeechVocab:
    """Speech-token vocabulary: unit codebook × duration classes, then EOS (and SOS, input only).

    ``unit_ids``: hama unit ids in the codebook; ``duration_edges``: lower bound of each class;
    ``duration_values``: frames each class is rendered with. Token ids: ``u·K + k`` for codebook
    index ``u`` and class ``k`` (K classes), :attr:`eos_id` = U·K, :attr:`sos_id` = U·K + 1.
    """

    unit_ids: list[int]
    duration_edges: list[int] = field(default_factory=lambda: list(DURATION_EDGES))
    duration_values: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 7, 11, 16])
    frame_rate: float = 50.0

    def __post_init__(self) -> None:
        if len(self.duration_values) != len(self.duration_edges):
            raise ValueError("one duration value per duration class is needed")
        if sorted(self.duration_edges) != list(self.duration_edges) or self.duration_edges[0] != 1:
            raise ValueError(f"duration_edges must rise from 1, got {self.duration_edges}")
        self._index = {u: i for i, u in enumerate(self.unit_ids)}

    @property
    def num_units(self) -> int:
        return len(self.unit_ids)

    @property
    def num_durations(self) -> int:
        return len(self.duration_edges)

    @property
    def num_unit_tokens(self) -> int:
        """Tokens that stand for a unit (the Token2Text input vocabulary): U·K."""
        return self.num_units * self.num_durations

    @property
    def eos_id(self) -> int:
        return self.num_unit_tokens

    @property
    def sos_id(self) -> int:
        return self.num_unit_tokens + 1

    @property
    def output_size(self) -> int:
        """Tokens the speech head scores: the unit tokens and EOS."""
        return self.num_unit_tokens + 1

    def duration_class(self, frames: int) -> int:
        return max(k for k, lo in enumerate(self.duration_edges) if frames >= lo)

    def encode(self, units: Units, unknown: Counter | None = None) -> list[int]:
        """Units (with durations) → speech tokens, without EOS. A unit outside the codebook is
        dropped (counted in ``unknown``)."""
        durs = units.durations or [1] * len(units.ids)
        out = []
        for u, d in zip(units.ids, durs):
            if u not in self._index:
                if unknown is not None:
                    unknown[u] += 1
                continue
            out.append(self._index[u] * self.num_durations + self.duration_class(d))
        return out

    def decode(self, tokens: Sequence[int]) -> Units:
        """Speech tokens → Units (hama ids, durations in frames), cut at the first EOS; specials
        elsewhere are skipped."""
        ids, durs = [], []
        for t in tokens:
            t = int(t)
            if t == self.eos_id:
                break
            if 0 <= t < self.num_unit_tokens:
                u, k = divmod(t, self.num_durations)
                ids.append(self.unit_ids[u])
                durs.append(self.duration_values[k])
        return Units(ids, durs, "phoneme", self.frame_rate)

    def unit_of(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codebook index of each unit token (integer division by K)."""
        return torch.div(tokens, self.num_durations, rounding_mode="floor")

    @classmethod
    def fit(cls, units: Sequence[Units], duration_edges: Sequence[int] = DURATION_EDGES) -> "SpeechVocab":
        """Codebook = units seen in ``units`` (+ the word boundary); each class renders at the median
        duration of the training units that fall into it (its lower bound when none do)."""
        seen = {WORD_BOUNDARY_ID}
        per_class: list[list[int]] = [[] for _ in duration_edges]
        probe = cls([WORD_BOUNDARY_ID], list(duration_edges), list(duration_edges))
        for u in units:
            seen.update(u.ids)
            for d in u.durations or []:
                per_class[probe.duration_class(d)].append(d)
        values = [int(round(float(np.median(c)))) if c else lo for c, lo in zip(per_class, duration_edges)]
        return cls(sorted(seen), list(duration_edges), values)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeechVocab":
        return cls(**d)


class FactoredEmbedding(nn.Module):
    """Embedding of the speech tokens with ``E[u·K + k] = A[u] + B[k]`` and ``extra`` free rows after
    the unit tokens (EOS, SOS). :attr:`weight` is the materialised ``[U·K + extra, D]`` matrix, so a
    soft token ỹ is embedded as ``ỹ · weight`` exactly as a one-hot token is looked up."""

    def __init__(self, num_units: int, num_durations: int, extra: int, dim: int, std: float = 0.02):
        super().__init__()
        self.num_units, self.num_durations = num_units, num_durations
        self.unit = nn.Parameter(torch.randn(num_units, dim) * std / math.sqrt(2))
        self.duration = nn.Parameter(torch.randn(num_durations, dim) * std / math.sqrt(2))
        self.extra = nn.Parameter(torch.randn(extra, dim) * std)

    @property
    def weight(self) -> torch.Tensor:
        grid = (self.unit[:, None, :] + self.duration[None, :, :]).reshape(-1, self.unit.shape[1])
        return torch.cat([grid, self.extra])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight)


class TTSLM(nn.Module):
    """Text → speech tokens. ``lm`` is the text LM's decoder stack (an HF base model such as
    ``LlamaModel``; a PEFT adapter may wrap it), ``vocab`` the :class:`SpeechVocab`.

    Same interface as the speech policies (:mod:`speechrl.models.policy`): :meth:`encode` (texts →
    prompt embeddings, once per prompt), :meth:`generate`, :meth:`completion_logps`, plus
    :meth:`speech_logits` (teacher-forced logits over the speech vocabulary, for DiffRO and the full KL)
    and :meth:`to_units` (tokens → units for the vocoder). ``text_input`` (:data:`TEXT_INPUTS`): what the
    prompt holds; with phonemes, :attr:`phoneme_embed` embeds hama's phoneme ids (``0..189``).
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, vocab: SpeechVocab, lm_name: str = "",
                 text_input: TextInput = "bpe"):
        super().__init__()
        if text_input not in TEXT_INPUTS:
            raise ValueError(f"text_input must be one of {TEXT_INPUTS}, got {text_input!r}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.lm_name = lm_name
        self.text_input = text_input
        dim = lm.config.hidden_size
        std = float(lm.get_input_embeddings().weight.detach().std())
        self.phoneme_embed = nn.Embedding(BLANK_ID, dim) if text_input != "bpe" else None
        if self.phoneme_embed is not None:
            nn.init.normal_(self.phoneme_embed.weight, std=std)
        self.speech_embed = FactoredEmbedding(vocab.num_units, vocab.num_durations, 2, dim, std)
        self.speech_head = nn.Linear(dim, vocab.output_size)
        nn.init.normal_(self.speech_head.weight, std=0.02)
        nn.init.zeros_(self.speech_head.bias)
        self.eos_token_id = vocab.eos_id
        self.pad_token_id = vocab.eos_id

    @classmethod
    def create(cls, vocab: SpeechVocab, lm_name: str = "smollm2-135m", decoder_layers: int | None = 4,
               text_input: TextInput = "bpe") -> "TTSLM":
        """A new TTS LM from a pretrained text LM (optionally truncated) with fresh speech embeddings/head
        (and phoneme embeddings when it reads phonemes)."""
        causal = truncate_layers(load_causal_lm(lm_name), decoder_layers)
        return cls(causal.model, load_tokenizer(lm_name), vocab, lm_name, text_input)

    @property
    def device(self) -> torch.device:
        return self.speech_head.weight.device

    def text_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameters trained from scratch (speech embeddings and head, phoneme embeddings): SFT gives
        them the new-parts learning rate."""
        new = [*self.speech_embed.parameters(), *self.speech_head.parameters()]
        return new + (list(self.phoneme_embed.parameters()) if self.phoneme_embed is not None else [])

    # -- prompts ----------------------------------------------------------------------------
    def prompt_ids(self, text: str) -> dict[str, list[int]]:
        """What the LM reads of ``text`` (``text_input``): ``{"bpe": token ids}`` and/or ``{"phonemes":
        hama phoneme ids}`` (:func:`~speechrl.speech.units.text_phonemes`), in prompt order."""
        out = {}
        if self.text_input in ("bpe", "both"):
            out["bpe"] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.text_input in ("phonemes", "both"):
            out["phonemes"] = text_phonemes(text).ids
        return out

    def encode(self, texts: Sequence[str]) -> Encoded:
        """Texts → left-padded ``[prompt][SOS]`` embeddings ``embeds`` [B, P, D] and ``mask``; the prompt
        is :meth:`prompt_ids` embedded (BPE tokens by the text LM, phonemes by :attr:`phoneme_embed`)."""
        device = self.device
        tables = {"bpe": self.text_embeddings(), "phonemes": self.phoneme_embed}
        sos = self.speech_embed(torch.tensor([self.vocab.sos_id], device=device))
        rows = []
        for text in texts:
            parts = [tables[kind](torch.tensor(ids, dtype=torch.long, device=device))
                     for kind, ids in self.prompt_ids(text).items()]
            rows.append(torch.cat([*parts, sos]))
        return left_pad_embeds(rows)

    # -- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = True, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, min_new_tokens: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Speech tokens ``[N, T]`` (KV-cached sampling), EOS-padded after each row's EOS; a row that
        reaches ``max_new_tokens`` without EOS is cut there (its mask has no EOS)."""
        temperature = temperature if do_sample else 0.0

        def step(embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
            hidden = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
            return self.speech_head(hidden).float()

        def pick(logits: torch.Tensor, t: int) -> torch.Tensor:
            if t < min_new_tokens:
                logits[:, self.vocab.eos_id] = float("-inf")
            return sample_next(logits, temperature, top_k, top_p, generator)

        return decode_cached(step, enc["embeds"], enc["mask"], lambda nxt: self.speech_embed(nxt)[:, None], pick,
                             max_new_tokens, self.vocab.eos_id)

    def completion_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """1 on every token up to and including each row's first EOS."""
        return completion_mask(ids, self.vocab.eos_id).to(ids.device)

    # -- teacher forcing --------------------------------------------------------------------
    def speech_logits(self, enc: Encoded, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[N, T, V]`` over the speech vocabulary; ``logits[:, t]`` scores
        ``ids[:, t]`` (the alignment of :mod:`speechrl.losses.logps`)."""
        embeds, prompt_mask = enc["embeds"], enc["mask"]
        full_mask = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        inputs = torch.cat([embeds, self.speech_embed(ids[:, :-1])], dim=1)
        hidden = self.lm(inputs_embeds=inputs, attention_mask=full_mask[:, :-1],
                         position_ids=positions[:, :-1]).last_hidden_state
        return self.speech_head(hidden[:, embeds.shape[1] - 1:])

    def forward(self, enc: Encoded, ids: torch.Tensor, mask: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """:meth:`completion_logps`, or with ``return_logits`` :meth:`speech_logits` (so accelerate-wrapped
        training goes through ``forward``)."""
        return self.speech_logits(enc, ids, mask) if return_logits else self.completion_logps(enc, ids, mask)

    def completion_logps(self, enc: Encoded, ids: torch.Tensor, mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(s_t | text, s_<t) per speech token ``[N, T]`` (logits / T)."""
        return token_logps(self.speech_logits(enc, ids, mask), ids, temperature)

    # -- units ------------------------------------------------------------------------------
    def target_tokens(self, units: Sequence[Units], max_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets: each utterance's speech tokens (cut to ``max_tokens − 1``) + EOS,
        EOS-padded, with their mask."""
        rows = [self.vocab.encode(u)[: (max_tokens - 1) if max_tokens else None] + [self.vocab.eos_id]
                for u in units]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.vocab.eos_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width))
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1.0
        return ids.to(self.device), mask.to(self.device)

    def to_units(self, ids: torch.Tensor) -> list[Units]:
        """Generated tokens → Units for the vocoder (cut at EOS)."""
        return [self.vocab.decode(row.tolist()) for row in ids.cpu()]

    # -- persistence ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """``lm/`` (HF base-model folder, safetensors; a LoRA adapter merged), ``speech.safetensors``
        (speech embeddings and head, phoneme embeddings), ``tts_lm.json`` (vocabulary, text LM name, text
        input)."""
        parts = {"speech_embed": self.speech_embed, "speech_head": self.speech_head,
                 "phoneme_embed": self.phoneme_embed}
        state = {f"{name}.{k}": v for name, part in parts.items() if part is not None
                 for k, v in part.state_dict().items()}
        return save_model_folder(folder, self.lm, self.tokenizer, state, "speech.safetensors",
                                 {"vocab": self.vocab.to_dict(), "lm_name": self.lm_name,
                                  "text_input": self.text_input}, "tts_lm.json")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "TTSLM":
        from transformers import AutoModel

        meta, tokenizer, tensors = read_model_folder(folder, "speech.safetensors", "tts_lm.json")
        lm = AutoModel.from_pretrained(str(Path(folder) / "lm"), use_safetensors=True)
        model = cls(lm, tokenizer, SpeechVocab.from_dict(meta["vocab"]), meta["lm_name"],
                    meta.get("text_input", "bpe"))
        model.load_state_dict(tensors, strict=False)
        return model
