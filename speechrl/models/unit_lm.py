"""Unit LM: a Hugging Face causal LM over discrete speech units, TWIST-style.

Unit ``u`` is token ``offset + u`` of a text LM's vocabulary: ``offset`` is the text vocabulary size
and the embedding table is resized by ``num_units`` rows (+ one speech BOS row), so a pretrained text
LM (SmolLM2-135M offline, OPT/LLaMA for TWIST) warm-starts the unit LM. New rows start at the mean
text embedding plus Gaussian noise with the text embeddings' per-dimension spread (distinct units,
same scale as the rows the LM already knows). With SmolLM2's tied head this starts far from uniform
(dev NLL 15 nats vs log 190 = 5.2) but learns fastest: after 40 steps (4 layers, batch 8, lr 3e-4,
real phoneme units) dev NLL 2.61, against 2.82 / 3.01 with the noise scaled by 0.3 / 0.1.

**The unit LM's distribution is over units only.** Every log-prob (training, NLL, DPO) and every
sample comes from the logits of the ``num_units`` unit rows of the LM head; the text rows are kept
(they hold the warm start) but never scored or sampled. This is exactly the full-vocabulary softmax
with the text logits masked to −∞ (what a logits processor would do), at 1/250 of the LM-head cost
for SmolLM2 — the head over 49k text rows would otherwise dominate a truncated model's step on CPU.
No text token can be sampled by construction. (LMs that rescale logits in the head — Gemma's
soft-capping, Cohere's ``logit_scale`` — are not supported.)

Sequences are ``[BOS] + units`` when the model has a speech BOS (:meth:`UnitLM.create` adds one),
so the first unit is scored too. A TWIST checkpoint has none (``bos_id=None``): its first unit
is context only. :meth:`UnitLM.from_pretrained` reads a folder written by :meth:`save_pretrained`
(HF causal-LM folder + ``unit_lm.json``) or a plain TWIST folder (HF causal LM whose ``config.json``
has ``offset``, or pass ``offset=``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm
from torch import Tensor, nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from speechrl.losses.logps import IGNORE_INDEX, sequence_logps, shift_for_causal_lm, token_logps
from speechrl.models.decoding import decode_cached, sample_next
from speechrl.models.hub import load_causal_lm
from speechrl.models.speech_lm import truncate_layers

META_FILE = "unit_lm.json"
_UNSET = object()


def _init_new_rows(weight: Tensor, old: int, generator: torch.Generator | None = None) -> None:
    """Rows ``old:`` ← mean of rows ``:old`` + N(0, per-dimension std²)."""
    with torch.no_grad():
        base = weight[:old].float()
        mean, std = base.mean(0), base.std(0) if old > 1 else torch.ones_like(base[0]) * 0.02
        noise = torch.randn((weight.shape[0] - old, weight.shape[1]), generator=generator)
        weight[old:] = (mean + noise * std).to(weight.dtype)


class UnitLM(nn.Module):
    """A causal LM over ``num_units`` speech units at token ids ``offset .. offset + num_units − 1``.

    ``lm`` may later be wrapped in a PEFT LoRA adapter (``speechrl.trainers.lora.add_lora``); every
    method goes through the adapter, and ``lm.disable_adapter()`` gives the frozen base.
    """

    def __init__(self, lm: PreTrainedModel, num_units: int, offset: int, bos_id: int | None = None,
                 lm_name: str = ""):
        super().__init__()
        vocab = lm.get_input_embeddings().num_embeddings
        if num_units < 1 or offset < 0 or offset + num_units > vocab:
            raise ValueError(f"units {offset}..{offset + num_units - 1} do not fit a vocabulary of {vocab}")
        if bos_id is not None and not 0 <= bos_id < vocab:
            raise ValueError(f"bos_id {bos_id} outside the vocabulary of {vocab}")
        self.lm = lm
        self.num_units = int(num_units)
        self.offset = int(offset)
        self.bos_id = None if bos_id is None else int(bos_id)
        self.lm_name = lm_name

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_lm(cls, lm: PreTrainedModel, num_units: int, add_bos: bool = True, lm_name: str = "",
                seed: int | None = None) -> "UnitLM":
        """Warm start from a text LM: append ``num_units`` unit rows (+ a speech BOS) to its vocabulary."""
        offset = lm.get_input_embeddings().num_embeddings
        new = offset + num_units + int(add_bos)
        lm.resize_token_embeddings(new, mean_resizing=False)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        _init_new_rows(lm.get_input_embeddings().weight, offset, gen)
        head = lm.get_output_embeddings()
        if head is not None and head.weight is not lm.get_input_embeddings().weight:
            _init_new_rows(head.weight, offset, gen)
            if getattr(head, "bias", None) is not None:
                with torch.no_grad():
                    head.bias[offset:] = head.bias[:offset].mean()
        lm.config.vocab_size = new
        return cls(lm, num_units, offset, offset + num_units if add_bos else None, lm_name)

    def init_from_text(self, texts: dict[int, str], tokenizer: Any) -> None:
        """Unit ``u`` (a word token, e.g. :class:`~speechrl.speech.units.lexicon.LexiconWords`) starts from the
        text LM's own embedding of ``" " + texts[u]`` (the mean over its text tokens), input and output rows
        alike: a token that stands for a word the text LM knows reads as that word from the first step."""
        rows = [e.weight for e in (self.hf.get_input_embeddings(), self.hf.get_output_embeddings()) if e is not None]
        with torch.no_grad():
            for weight in {id(w): w for w in rows}.values():
                for unit, text in texts.items():
                    ids = tokenizer(" " + text, add_special_tokens=False).input_ids
                    weight[self.offset + unit] = weight[ids].float().mean(0).to(weight.dtype)

    @classmethod
    def create(cls, lm: str = "smollm2-135m", num_units: int = 190, layers: int | None = None,
               seed: int | None = 0) -> "UnitLM":
        """A unit LM warm-started from a pretrained text LM (hub id, folder or ``"smollm2-135m"``),
        optionally truncated to its first ``layers`` decoder layers (CPU speed)."""
        return cls.from_lm(truncate_layers(load_causal_lm(lm), layers), num_units, lm_name=lm, seed=seed)

    @classmethod
    def from_scratch(cls, num_units: int = 190, hidden_size: int = 256, layers: int = 4, heads: int = 4,
                     max_positions: int = 2048) -> "UnitLM":
        """A randomly initialised Llama over units alone (offset 0, BOS = ``num_units``)."""
        cfg = LlamaConfig(vocab_size=num_units + 1, hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max_positions, tie_word_embeddings=True,
                          bos_token_id=num_units, eos_token_id=None, pad_token_id=None)
        return cls(LlamaForCausalLM(cfg), num_units, 0, num_units, "scratch")

    @classmethod
    def from_pretrained(cls, folder: str | Path, offset: int | None = None, num_units: int | None = None,
                        bos_id: int | None | object = _UNSET, layers: int | None = None) -> "UnitLM":
        """Load a :meth:`save_pretrained` folder, or a TWIST checkpoint (an HF causal LM folder; the
        unit offset from ``config.offset`` or ``offset=``; ``num_units`` defaults to the rest of the
        vocabulary; no BOS unless ``bos_id`` is given)."""
        folder = Path(folder)
        lm = truncate_layers(load_causal_lm(str(folder)), layers)
        meta = json.loads((folder / META_FILE).read_text()) if (folder / META_FILE).is_file() else {}
        offset = offset if offset is not None else meta.get("offset", getattr(lm.config, "offset", None))
        if offset is None:
            raise ValueError(f"{folder}: no {META_FILE} and no `offset` in config.json; pass offset=")
        vocab = lm.get_input_embeddings().num_embeddings
        num_units = num_units or meta.get("num_units") or vocab - offset
        bos = meta.get("bos_id") if bos_id is _UNSET else bos_id
        return cls(lm, num_units, offset, bos, meta.get("lm_name", str(folder)))

    def save_pretrained(self, folder: str | Path) -> Path:
        """HF causal-LM folder (safetensors; a LoRA adapter merged into a copy) + ``unit_lm.json``;
        ``config.json`` also carries ``offset``, as TWIST checkpoints do."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lm = copy.deepcopy(self.lm).merge_and_unload() if hasattr(self.lm, "merge_and_unload") else self.lm
        lm.config.offset = self.offset
        lm.save_pretrained(folder)
        meta = {"offset": self.offset, "num_units": self.num_units, "bos_id": self.bos_id, "lm_name": self.lm_name}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    # -- model -----------------------------------------------------------------------------------
    @property
    def hf(self) -> PreTrainedModel:
        """The HF causal LM (inside a PEFT wrapper, with its LoRA layers injected)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def unit_logits(self, hidden: Tensor) -> Tensor:
        """LM-head logits of the unit rows only: ``[..., num_units]``, column j = unit j."""
        head = self.hf.get_output_embeddings()
        rows = slice(self.offset, self.offset + self.num_units)
        bias = head.bias[rows] if getattr(head, "bias", None) is not None else None
        return nn.functional.linear(hidden, head.weight[rows], bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor | None = None) -> Tensor:
        """Unit logits ``[N, T, num_units]`` for token ids ``[N, T]`` (position t predicts t + 1). The mask is
        2-D (padding), 4-D (custom, :meth:`branch_logps`) or None with restarting ``position_ids`` (packed
        sequences, :meth:`pack_rows`)."""
        hidden = self.hf.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    use_cache=False).last_hidden_state
        return self.unit_logits(hidden)

    # -- token layout ----------------------------------------------------------------------------
    def encode(self, units: Sequence[Sequence[int]]) -> list[list[int]]:
        """Unit id lists → token id lists (``[BOS] + offset + u``)."""
        head = [self.bos_id] if self.bos_id is not None else []
        out = []
        for seq in units:
            if any(not 0 <= int(u) < self.num_units for u in seq):
                raise ValueError(f"unit ids must be in 0..{self.num_units - 1}")
            out.append(head + [self.offset + int(u) for u in seq])
        return out

    def pack(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor, Tensor]:
        """Right-padded ``[BOS] + prompt + completion`` token ids, attention mask, and the score mask
        (1 on completion tokens only: the prompt is context)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        rows = self.encode([list(p) + list(c) for p, c in zip(prompts, completions)])
        width = max(1, max(len(r) for r in rows))
        pad = self.bos_id if self.bos_id is not None else self.offset
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        score = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, c) in enumerate(zip(rows, completions)):
            ids[i, :len(r)] = torch.tensor(r)
            attn[i, :len(r)] = 1
            score[i, len(r) - len(c):len(r)] = 1
        return ids.to(self.device), attn.to(self.device), score.to(self.device)

    def pack_rows(self, sequences: Sequence[Sequence[int]], width: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Padding-free layout of whole unit sequences for training: each ``[BOS] + units`` placed first-fit,
        longest first, into rows of ``width`` tokens (or of the longest sequence, if longer), position ids
        restarting at 0 for each. Given to the model with no attention mask and these position ids,
        Hugging Face attends within each sequence only (packed sequences, ``find_packed_sequence_indices``),
        so every log-prob is that of :meth:`pack`'s padded layout, computed over fewer tokens. Returns token
        ids, position ids and the score mask (1 on every token a sequence predicts: all but its first)."""
        rows_of = self.encode(sequences)
        width = max([width] + [len(r) for r in rows_of])
        rows: list[list[list[int]]] = []
        for r in sorted(rows_of, key=len, reverse=True):
            home = next((row for row in rows if sum(map(len, row)) + len(r) <= width), None)
            if home is None:
                rows.append([r])
            else:
                home.append(r)
        pad = self.bos_id if self.bos_id is not None else self.offset
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        score = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            start = 0
            for r in row:
                ids[i, start:start + len(r)] = torch.tensor(r, dtype=torch.long)
                pos[i, start:start + len(r)] = torch.arange(len(r))
                score[i, start + 1:start + len(r)] = 1
                start += len(r)
            pos[i, start:] = torch.arange(width - start)  # the padding: a sequence of its own, unscored
        return ids.to(self.device), pos.to(self.device), score.to(self.device)

    def labels(self, input_ids: Tensor, score_mask: Tensor) -> Tensor:
        """Unit-space labels (token − offset) where scored, the ignore index elsewhere."""
        return (input_ids - self.offset).masked_fill(score_mask == 0, IGNORE_INDEX)

    def token_logps(self, input_ids: Tensor, attention_mask: Tensor | None, score_mask: Tensor,
                    model: nn.Module | None = None, position_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-token log-probs ``[N, T−1]`` and their (shifted) score mask, of :meth:`pack`'s layout or of
        :meth:`pack_rows`' (no attention mask, its position ids). ``model``: this module as wrapped by
        accelerate (its ``forward`` is the same)."""
        logits = (model or self)(input_ids, attention_mask, position_ids)
        logits, labels, mask = shift_for_causal_lm(logits, self.labels(input_ids, score_mask), score_mask)
        return token_logps(logits, labels), mask

    def sequence_logps(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                       model: nn.Module | None = None) -> Tensor:
        """log π(completion | prompt) per row ``[N]`` (prompt masked; differentiable)."""
        ids, attn, score = self.pack(prompts, completions)
        logits = (model or self)(ids, attn)
        return sequence_logps(*shift_for_causal_lm(logits, self.labels(ids, score), score))

    def branch_logps(self, prompts: Sequence[Sequence[int]], branches: Sequence[Sequence[Sequence[int]]],
                     model: nn.Module | None = None) -> Tensor:
        """log π(branch | prompt) of each of a prompt's continuations ``[N, K]`` (differentiable), the prompt
        computed once: one row ``[BOS] + prompt + branch 1 + … + branch K`` per prompt, where each branch is
        positioned right after the prompt and attends to the prompt and to itself only (a custom 4-D attention
        mask), so every value equals :meth:`sequence_logps` of the prompt and that branch alone. DPO's chosen
        and rejected continuations share their prompt: the prompt's tokens are computed once, not twice."""
        if len(prompts) != len(branches) or len({len(b) for b in branches}) > 1:
            raise ValueError("need one list of K continuations per prompt, K the same for every prompt")
        heads, bos = self.encode(prompts), int(self.bos_id is not None)
        rows = [h + t[bos:] for h, t in zip(heads, self.encode([[u for b in bs for u in b] for bs in branches]))]
        width, k = max(1, max(map(len, rows))), len(branches[0])
        pad = self.bos_id if self.bos_id is not None else self.offset
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 prompt, j + 1 branch j, -1 padding
        pred = torch.zeros((len(rows), k, width), dtype=torch.long)  # the position whose logits score a token
        score = torch.zeros((len(rows), k, width), dtype=torch.long)
        for i, (head, bs) in enumerate(zip(heads, branches)):
            ids[i, :len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
            pos[i, :len(head)] = torch.arange(len(head))
            segment[i, :len(head)] = 0
            start = len(head)
            for j, b in enumerate(bs):
                span = slice(start, start + len(b))
                pos[i, span] = torch.arange(len(head), len(head) + len(b))
                segment[i, span] = j + 1
                pred[i, j, span] = torch.arange(start - 1, start + len(b) - 1)
                pred[i, j, start] = max(len(head) - 1, 0)  # the branch's first token: scored at the prompt's end
                score[i, j, span] = 1 if head else torch.arange(len(b)) > 0  # no BOS, no prompt: first is context
                start += len(b)
        q, kv = segment[:, :, None], segment[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = causal & (kv >= 0) & ((kv == 0) | (kv == q)) | torch.eye(width, dtype=torch.bool)  # padding: itself
        dtype = self.hf.get_input_embeddings().weight.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]
        ids, pos, mask, pred, score = (t.to(self.device) for t in (ids, pos, mask, pred, score))
        logits = (model or self)(ids, mask, pos)
        out = []
        for j in range(k):
            picked = logits.gather(1, pred[:, j, :, None].expand(-1, -1, logits.shape[-1]))
            out.append(sequence_logps(picked, self.labels(ids, score[:, j]), score[:, j]))
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def nll(self, sequences: Sequence[Sequence[int]], batch_size: int = 32) -> list[tuple[float, int]]:
        """Total NLL (nats) and number of scored units of each sequence (no grad, eval mode). With a
        BOS every unit is scored; without one (TWIST) the first unit is context."""
        was_training = self.training
        self.eval()
        out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        ctx = 0 if self.bos_id is not None else 1
        for start in range(0, len(order), batch_size):
            idx = [i for i in order[start:start + batch_size] if len(sequences[i]) > ctx]
            if not idx:
                continue
            lp = self.sequence_logps([list(sequences[i][:ctx]) for i in idx], [list(sequences[i][ctx:]) for i in idx])
            for i, v in zip(idx, lp.tolist()):
                out[i] = (-v, len(sequences[i]) - ctx)
        self.train(was_training)
        return out

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], n: int = 1, temperature: float = 0.8, top_k: int = 25,
                 top_p: float = 1.0, max_new_tokens: int = 150, seed: int = 0,
                 batch_size: int = 64) -> list[list[list[int]]]:
        """``n`` sampled continuations (unit id lists of ``max_new_tokens``) per prompt.

        Temperature, then top-k, then nucleus filtering, over the unit rows only (no text token can
        come out). Rows (prompt × n) run ``batch_size`` at a time, left-padded, with a KV cache;
        seeded by ``seed`` (the same call gives the same samples)."""
        if temperature <= 0:
            raise ValueError("temperature must be > 0 (use top_k=1 for greedy decoding)")
        rows = [list(p) for p in prompts for _ in range(n)]
        if self.bos_id is None and any(not r for r in rows):
            raise ValueError("a model without BOS needs a non-empty prompt")
        was_training = self.training
        self.eval()
        gen = torch.Generator(device=self.device).manual_seed(seed)
        samples: list[list[int]] = []
        starts = range(0, len(rows), batch_size)
        for start in tqdm(starts, desc="sample units", unit="batch", disable=len(starts) < 2):
            samples += self._sample(rows[start:start + batch_size], temperature, top_k, top_p, max_new_tokens, gen)
        self.train(was_training)
        return [samples[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _sample(self, prompts: list[list[int]], temperature: float, top_k: int, top_p: float, max_new: int,
                gen: torch.Generator) -> list[list[int]]:
        tokens = self.encode(prompts)
        width = max(len(t) for t in tokens)
        pad = self.bos_id if self.bos_id is not None else self.offset
        ids = torch.full((len(tokens), width), pad, dtype=torch.long, device=self.device)
        attn = torch.zeros_like(ids)
        for i, t in enumerate(tokens):  # left padding: every row's next token is at the same column
            ids[i, width - len(t):] = torch.tensor(t)
            attn[i, width - len(t):] = 1
        decoder = self.hf.base_model

        def step(inputs: Tensor, mask: Tensor, positions: Tensor, cache: Any) -> Tensor:
            hidden = decoder(input_ids=inputs, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True).last_hidden_state[:, -1]
            return self.unit_logits(hidden).float()

        def pick(logits: Tensor, _t: int) -> Tensor:
            return sample_next(logits, temperature, top_k, top_p, gen)

        # the cache the decoder would make itself (its config may ask for sliding-window layers)
        units = decode_cached(step, ids, attn, lambda unit: (unit + self.offset)[:, None], pick, max_new,
                              cache=DynamicCache(config=decoder.config))
        return units.tolist()
