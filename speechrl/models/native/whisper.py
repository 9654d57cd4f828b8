"""Whisper (``WhisperForConditionalGeneration``) as an encoder–decoder policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.native.common import (NativePolicy, _default_whisper_extractor, collate_mel,
                                           whisper_mel_features)
from speechrl.models.policy import Encoded, PromptBatch, generated_logps, left_pad_ids


class WhisperPolicy(NativePolicy):
    """``WhisperForConditionalGeneration`` as an encoder–decoder policy.

    ``encode`` runs the encoder once (``Encoded``: ``encoder_hidden`` [B, S, d], the left-padded decoder
    prefix ``prefix`` + ``prefix_mask``); ``generate`` continues the prefix with the encoder output
    (cross-attention), ``completion_logps`` teacher-forces the decoder on prefix + completion; decoder
    positions are counted from the mask, so padded prefixes of different lengths are exact.

    The prefix is the tokenizer's ``<|startoftranscript|>`` [language] [task] ``<|notimestamps|>``
    (``language``/``task`` for multilingual checkpoints). Whisper follows no instructions, so the text
    prompt is handled by ``instruction``:

    ``"ignore"`` (default)
        the text is not used (ASR: every prompt is the same prefix).
    ``"prompt"``
        Whisper's previous-text conditioning (``prompt_ids``): ``<|startofprev|> text`` before the
        prefix — a hint for vocabulary, spelling and style, not a command.

    Completions are the transcript tokens ending with ``<|endoftext|>``.
    """

    hf_class = "WhisperForConditionalGeneration"

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: Any = None,
                 instruction: str = "ignore", language: str | None = None, task: str | None = None):
        if instruction not in ("ignore", "prompt"):
            raise ValueError(f"instruction must be 'ignore' or 'prompt', not {instruction!r}")
        if feature_extractor is None:
            feature_extractor = _default_whisper_extractor(model.config.num_mel_bins,
                                                           model.config.max_source_positions)
        if language is not None or task is not None:
            tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
        super().__init__(model, tokenizer, feature_extractor, None,
                         {"instruction": instruction, "language": language, "task": task})
        self.instruction = instruction
        self.prefix = [int(t) for t in tokenizer.prefix_tokens]
        self._set_lm(model.model.decoder)


    def featurize(self, audio: Any) -> dict[str, np.ndarray]:
        return whisper_mel_features(self.feature_extractor, audio)

    def prefix_ids(self, instruction: str) -> list[int]:
        if self.instruction == "prompt" and instruction.strip():
            return [int(t) for t in self.tokenizer.get_prompt_ids(instruction, return_tensors="np")] + self.prefix
        return list(self.prefix)

    def encode(self, batch: PromptBatch) -> Encoded:
        mel, _ = collate_mel(self._features(batch.audio))
        hidden = self.model.model.encoder(mel.to(self.device, self.dtype)).last_hidden_state
        ids, mask = left_pad_ids([self.prefix_ids(t) for t in batch.text], self.pad_token_id)
        return Encoded({"encoder_hidden": hidden, "prefix": ids.to(self.device), "prefix_mask": mask.to(self.device)})

    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, return_logps: bool = False) -> Any:
        """Completion ids [N, T] (prefix removed), right-padded after EOS; ``(ids, logps)`` with
        ``return_logps=True``."""
        from transformers.modeling_outputs import BaseModelOutput

        prefix = enc["prefix"]
        max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - prefix.shape[1])
        out = self._generate(max_new_tokens, do_sample, temperature, top_p, top_k, return_logps,
                             encoder_outputs=BaseModelOutput(last_hidden_state=enc["encoder_hidden"]),
                             decoder_input_ids=prefix, decoder_attention_mask=enc["prefix_mask"])
        ids = (out.sequences if return_logps else out)[:, prefix.shape[1]:]
        return (ids, generated_logps(out, ids, temperature if do_sample else 1.0)) if return_logps else ids

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(o_t | audio, prefix, o_<t) for every completion token [N, T] (teacher-forced decoder;
        logits / T)."""
        prefix, prefix_mask = enc["prefix"], enc["prefix_mask"]
        ids = torch.cat([prefix, completion_ids], dim=1)
        mask = torch.cat([prefix_mask, completion_mask.to(prefix_mask.dtype)], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                                          encoder_hidden_states=enc["encoder_hidden"],
                                          use_cache=False).last_hidden_state
        p = prefix.shape[1]
        return token_logps(self.model.proj_out(hidden[:, p - 1: -1]), completion_ids, temperature)
