"""Token2Text: speech tokens → text, the differentiable reward model of DiffRO ("ASR from tokens").

A small HF causal LM (SmolLM2 truncated to a few layers offline, its pretrained text head kept) reads

    [speech-token embeddings] [SEP] [text tokens] [EOS]

and is trained on ground-truth units of the training utterances → their text. The speech tokens are
those of the TTS LM (:class:`~speechrl.models.tts_lm.SpeechVocab`, unit × duration class) and are
embedded by one matrix ``E`` (:meth:`Token2Text.embedding_matrix`, factored like the policy's), so a
relaxed token ỹ (DiffRO's Gumbel-Softmax sample) enters as ``ỹ · E`` (:func:`speechrl.losses.diffro.soft_embed`)
exactly where a one-hot token would be looked up.

Multi-task reward heads (DiffRO's MTR), optional: ``rate_classes`` (the corpus speeds, one class each)
adds a speaking-rate class head on the hidden state at SEP (which has attended to every speech token).

Rows of different speech lengths keep their tokens at the same positions (right-padded, holes masked
out of attention; position ids count real tokens only), so a soft batch needs no re-packing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from speechrl.losses.diffro import soft_embed
from speechrl.losses.logps import IGNORE_INDEX, token_logps
from speechrl.models.decoding import decode_cached
from speechrl.models.hub import load_causal_lm, load_tokenizer, read_model_folder, save_model_folder
from speechrl.models.speech_lm import truncate_layers
from speechrl.models.tts_lm import FactoredEmbedding, SpeechVocab

__all__ = ["Token2Text"]


class Token2Text(nn.Module):
    """Speech tokens (ids or soft one-hots over the U·K unit tokens) → text log-likelihood and greedy text."""

    def __init__(self, lm: nn.Module, tokenizer: Any, vocab: SpeechVocab, rate_classes: Sequence[float] = (),
                 lm_name: str = ""):
        super().__init__()
        self.lm = lm  # an HF causal LM (``.model`` decoder stack, ``.lm_head``)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.lm_name = lm_name
        self.rate_classes = [float(r) for r in rate_classes]
        dim = lm.config.hidden_size
        std = float(lm.get_input_embeddings().weight.detach().std())
        self.unit_embed = FactoredEmbedding(vocab.num_units, vocab.num_durations, 1, dim, std)  # extra row: SEP
        self.rate_head = nn.Linear(dim, len(self.rate_classes)) if self.rate_classes else None

    @classmethod
    def create(cls, vocab: SpeechVocab, lm_name: str = "smollm2-135m", decoder_layers: int | None = 4,
               rate_classes: Sequence[float] = ()) -> "Token2Text":
        lm = truncate_layers(load_causal_lm(lm_name), decoder_layers)
        return cls(lm, load_tokenizer(lm_name), vocab, rate_classes, lm_name)

    def rate_class(self, speed: float) -> int:
        """Index of the rate class nearest to ``speed``."""
        return min(range(len(self.rate_classes)), key=lambda k: abs(self.rate_classes[k] - speed))

    @property
    def device(self) -> torch.device:
        return self.unit_embed.unit.device

    def embedding_matrix(self) -> torch.Tensor:
        """E: ``[U·K, D]``, the embedding of every unit token (ỹ · E embeds a soft token)."""
        return self.unit_embed.weight[: self.vocab.num_unit_tokens]

    def text_targets(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text token ids + EOS, right-padded (``[N, L]``) with their mask."""
        eos = self.tokenizer.eos_token_id
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), eos, dtype=torch.long)
        mask = torch.zeros((len(rows), width))
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1.0
        return ids.to(self.device), mask.to(self.device)

    def _embed_units(self, units: torch.Tensor) -> torch.Tensor:
        if units.is_floating_point():  # soft tokens [N, T, U·K]
            return soft_embed(units, self.embedding_matrix())
        return nn.functional.embedding(units.clamp(0, self.vocab.num_unit_tokens - 1), self.embedding_matrix())

    def _hidden(self, units: torch.Tensor, unit_mask: torch.Tensor, text_ids: torch.Tensor | None,
                text_mask: torch.Tensor | None) -> torch.Tensor:
        """Hidden states of ``[units][SEP][text]`` (text without its last token)."""
        n = units.shape[0]
        parts = [self._embed_units(units), self.unit_embed.extra[None, :1].expand(n, 1, -1)]
        masks = [unit_mask.to(torch.long), unit_mask.new_ones((n, 1), dtype=torch.long)]
        if text_ids is not None:
            parts.append(self.lm.get_input_embeddings()(text_ids[:, :-1]))
            masks.append(text_mask[:, :-1].to(torch.long))
        mask = torch.cat(masks, dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.lm.model(inputs_embeds=torch.cat(parts, dim=1), attention_mask=mask,
                             position_ids=positions).last_hidden_state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`text_logprob` (so accelerate-wrapped training goes through ``forward``)."""
        return self.text_logprob(*args, **kwargs)

    def text_logprob(self, units: torch.Tensor, unit_mask: torch.Tensor, text_ids: torch.Tensor,
                     text_mask: torch.Tensor, return_rate_logits: bool = False):
        """R = Σ_n log P(Y_n | Y_<n, units), one value per row ``[N]`` (differentiable in soft ``units``).

        ``units``: ids ``[N, T]`` or soft tokens ``[N, T, U·K]``; ``unit_mask`` ``[N, T]`` (1 on speech
        tokens); ``text_ids``/``text_mask`` from :meth:`text_targets`. With ``return_rate_logits``, also
        the rate head's logits ``[N, C]`` (MTR)."""
        t = units.shape[1]
        hidden = self._hidden(units, unit_mask, text_ids, text_mask)
        logits = self.lm.lm_head(hidden[:, t:])  # SEP predicts the first text token
        labels = text_ids.masked_fill(text_mask == 0, IGNORE_INDEX)
        logprob = (token_logps(logits, labels) * text_mask).sum(-1)
        if not return_rate_logits:
            return logprob
        if self.rate_head is None:
            raise ValueError("this Token2Text has no rate head (no rate_classes)")
        return logprob, self.rate_head(hidden[:, t])

    def rate_logits(self, units: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        if self.rate_head is None:
            raise ValueError("this Token2Text has no rate head (no rate_classes)")
        return self.rate_head(self._hidden(units, unit_mask, None, None)[:, units.shape[1]])

    @torch.no_grad()
    def transcribe(self, units: torch.Tensor, unit_mask: torch.Tensor, max_new_tokens: int = 48) -> list[str]:
        """Greedy text for speech-token ids ``[N, T]`` (KV-cached)."""
        n = units.shape[0]
        eos = self.tokenizer.eos_token_id
        embeds = torch.cat([self._embed_units(units), self.unit_embed.extra[None, :1].expand(n, 1, -1)], dim=1)
        mask = torch.cat([unit_mask.to(torch.long), unit_mask.new_ones((n, 1), dtype=torch.long)], dim=1)

        def step(inputs: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
            hidden = self.lm.model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions,
                                   past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
            return self.lm.lm_head(hidden)

        rows = decode_cached(step, embeds, mask, lambda nxt: self.lm.get_input_embeddings()(nxt)[:, None],
                             lambda logits, _t: logits.argmax(-1), max_new_tokens, eos).tolist()
        return [self.tokenizer.decode(r[: r.index(eos)] if eos in r else r, skip_special_tokens=True).strip()
                for r in rows]

    # -- persistence ------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """``lm/`` (HF folder), ``token2text.safetensors`` (speech embeddings, rate head), ``token2text.json``."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}
        return save_model_folder(folder, self.lm, self.tokenizer, state, "token2text.safetensors",
                                 {"vocab": self.vocab.to_dict(), "lm_name": self.lm_name,
                                  "rate_classes": self.rate_classes}, "token2text.json")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Token2Text":
        meta, tokenizer, tensors = read_model_folder(folder, "token2text.safetensors", "token2text.json")
        lm = load_causal_lm(str(Path(folder) / "lm"))
        model = cls(lm, tokenizer, SpeechVocab.from_dict(meta["vocab"]), meta["rate_classes"], meta["lm_name"])
        model.load_state_dict(tensors, strict=False)
        return model
