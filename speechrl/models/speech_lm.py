"""Speech-aware LM: audio front end (encoder + projector) + a Hugging Face causal LM.

The prompt is laid out as a chat turn whose audio span is a run of front-end embeddings:

    <|im_start|>user\\n [audio embeddings] \\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n

(special tokens from the LM's tokenizer). Prompts are left-padded so that generation and teacher-forced
scoring see identical positions. Completions end with the tokenizer's EOS. Only completion tokens are
ever scored (prompt and audio positions never enter a loss), and prompts are never truncated, so an
audio span is never cut. Implements :class:`speechrl.models.policy.Policy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.frontends import make_front_end
from speechrl.models.hub import load_causal_lm, load_tokenizer, read_model_folder, save_model_folder
from speechrl.models.policy import Encoded, PromptBatch, generated_logps, left_pad_embeds


def truncate_layers(lm: PreTrainedModel, num_layers: int | None) -> PreTrainedModel:
    """Keep the first ``num_layers`` decoder layers (a CPU-speed trade-off; ``None`` keeps all)."""
    layers = lm.model.layers
    if num_layers is None or num_layers >= len(layers):
        return lm
    lm.model.layers = layers[:num_layers]
    lm.config.num_hidden_layers = num_layers
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = lm.config.layer_types[:num_layers]
    return lm


class SpeechLM(nn.Module):
    def __init__(self, lm: PreTrainedModel, tokenizer: Any, front_end: nn.Module, front_end_kwargs: dict[str, Any],
                 lm_name: str = ""):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.front_end = front_end
        self.front_end_kwargs = front_end_kwargs
        self.lm_name = lm_name
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id
        user = tokenizer.bos_token + "user\n" if tokenizer.bos_token else "user\n"
        self._prefix = tokenizer(user, add_special_tokens=False)["input_ids"]
        self._suffix_cache: dict[str, list[int]] = {}

    @classmethod
    def create(cls, lm_name: str = "smollm2-135m", front_end: str = "units", decoder_layers: int | None = None,
               **front_end_kwargs: Any) -> "SpeechLM":
        """A new speech LM: pretrained LM (optionally truncated) + a fresh front end."""
        lm = truncate_layers(load_causal_lm(lm_name), decoder_layers)
        fe = make_front_end(front_end, lm.config.hidden_size, **front_end_kwargs)
        return cls(lm, load_tokenizer(lm_name), fe, {"kind": front_end, **front_end_kwargs}, lm_name)

    # -- Policy ---------------------------------------------------------------------------------
    def featurize(self, audio: Any) -> dict[str, Any]:
        return self.front_end.featurize(audio)

    def _suffix(self, instruction: str) -> list[int]:
        if instruction not in self._suffix_cache:
            tok = self.tokenizer
            text = f"\n{instruction}{tok.eos_token}\n{tok.bos_token or ''}assistant\n"
            self._suffix_cache[instruction] = tok(text, add_special_tokens=False)["input_ids"]
        return self._suffix_cache[instruction]

    def encode(self, batch: PromptBatch) -> Encoded:
        """Front end once per prompt → left-padded prompt embeddings ``embeds`` [B, P, D] + ``mask``."""
        device = self.lm.device
        feats = {k: v.to(device) for k, v in self.front_end.collate(batch.audio).items()}
        audio, audio_mask = self.front_end(**feats)
        embed = self.lm.get_input_embeddings()
        rows = []
        for i, instruction in enumerate(batch.text):
            pre = embed(torch.tensor(self._prefix, device=device))
            suf = embed(torch.tensor(self._suffix(instruction), device=device))
            rows.append(torch.cat([pre, audio[i][audio_mask[i].bool()], suf]))
        return left_pad_embeds(rows)

    @torch.no_grad()
    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, return_logps: bool = False) -> Any:
        """Completion ids [N, T]; with ``return_logps``: ``(ids, logps)``, the sampled tokens' log-probs
        at the sampling temperature (:func:`~speechrl.models.policy.generated_logps`)."""
        kw = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = self.lm.generate(inputs_embeds=enc["embeds"], attention_mask=enc["mask"], max_new_tokens=max_new_tokens,
                               eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
                               output_logits=return_logps, return_dict_in_generate=return_logps, **kw)
        ids = out.sequences if return_logps else out
        ids = ids[:, -max_new_tokens:] if ids.shape[1] > max_new_tokens else ids
        return (ids, generated_logps(out, ids, temperature if do_sample else 1.0)) if return_logps else ids

    def forward(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
        """Same as :meth:`completion_logps` (so DDP-wrapped training goes through ``forward``)."""
        return self.completion_logps(enc, completion_ids, completion_mask, temperature)

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(o_t | prompt, o_<t) for every completion token [N, T] (teacher forcing; logits / T)."""
        embeds, mask = enc["embeds"], enc["mask"]
        comp = self.lm.get_input_embeddings()(completion_ids)
        full_mask = torch.cat([mask, completion_mask.to(mask.dtype)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        t = completion_ids.shape[1]
        logits = self.lm(inputs_embeds=torch.cat([embeds, comp], dim=1), attention_mask=full_mask,
                         position_ids=positions, logits_to_keep=t + 1).logits  # the LM head only where scored
        return token_logps(logits[:, :-1], completion_ids, temperature)

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """``lm/`` (HF folder, safetensors; LoRA merged), ``front_end.safetensors``, ``speech_lm.json``."""
        return save_model_folder(folder, self.lm, self.tokenizer, self.front_end.state_dict(), "front_end.safetensors",
                                 {"front_end": self.front_end_kwargs, "lm_name": self.lm_name}, "speech_lm.json")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "SpeechLM":
        meta, tokenizer, tensors = read_model_folder(folder, "front_end.safetensors", "speech_lm.json")
        lm = load_causal_lm(str(Path(folder) / "lm"))
        fe_kwargs = dict(meta["front_end"])
        fe = make_front_end(fe_kwargs.pop("kind"), lm.config.hidden_size, **fe_kwargs)
        fe.load_state_dict(tensors)
        return cls(lm, tokenizer, fe, meta["front_end"], meta.get("lm_name", ""))
