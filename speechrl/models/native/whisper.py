"""Whisper (``WhisperForConditionalGeneration``) as an encoder–decoder policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.native.common import NativePolicy, _default_whisper_extractor, collate_mel
from speechrl.models.native.whisper_decoder import SharedClipDecoder, cross_keys_values
from speechrl.models.policy import Encoded, PromptBatch, left_pad_ids


class WhisperPolicy(NativePolicy):
    """``WhisperForConditionalGeneration`` as an encoder–decoder policy.

    Encode once, really: ``encode`` runs the encoder once per clip (or reads its cached output), and
    ``Encoded.repeat(G)`` repeats only the decoder prefix and the row → clip index ``source``; the G
    samples of a prompt share the clip's encoder output *and* its cross-attention keys/values, computed
    once per clip in ``generate`` (where the G rows attend to them without per-row copies:
    :mod:`~speechrl.models.native.whisper_decoder`) and in ``completion_logps``.
    ``generate`` continues the prefix with a KV-cached decoder loop, ``completion_logps`` teacher-forces
    the decoder on prefix + completion; decoder positions are counted from the mask, so padded
    prefixes of different lengths are exact.

    The prefix is the tokenizer's ``<|startoftranscript|>`` [language] [task] ``<|notimestamps|>``
    (``language``/``task`` for multilingual checkpoints). Whisper follows no instructions, so the text
    prompt is handled by ``instruction``:

    ``"ignore"`` (default)
        the text is not used (ASR: every prompt is the same prefix).
    ``"prompt"``
        Whisper's previous-text conditioning (``prompt_ids``): ``<|startofprev|> text`` before the
        prefix — a hint for vocabulary, spelling and style, not a command.

    Completions are the transcript tokens ending with ``<|endoftext|>``; a reference is tokenized as
    ``" " + text`` (``completion_prefix``), as Whisper writes its transcripts.
    """

    completion_prefix = " "
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

    def prefix_ids(self, instruction: str) -> list[int]:
        if self.instruction == "prompt" and instruction.strip():
            return [int(t) for t in self.tokenizer.get_prompt_ids(instruction, return_tensors="np")] + self.prefix
        return list(self.prefix)

    # -- the encoder, once per clip ------------------------------------------------------------
    def encoder_outputs(self, feats: list[dict[str, np.ndarray]]) -> torch.Tensor:
        """The encoder's output [B, S, d] for feature dicts; a clip whose cached ``hidden`` is there
        (:func:`speechrl.data.features.cached_encodings`, frozen encoder) is not encoded again."""
        if all("hidden" in f for f in feats):
            return torch.stack([torch.as_tensor(f["hidden"]) for f in feats]).to(self.device, self.dtype)
        mel, _ = collate_mel(feats)
        return self.model.model.encoder(mel.to(self.device, self.dtype)).last_hidden_state

    @property
    def encoder_cache_key(self) -> str | None:
        """A name for this encoder's cached outputs (its features and weights), or ``None`` while the
        encoder trains (then nothing may be cached)."""
        encoder = self.model.model.encoder
        if any(p.requires_grad for p in encoder.parameters()):
            return None
        from speechrl.checkpoint import weights_digest

        return f"{self.feature_kind}-encoder-{weights_digest(encoder)[:10]}"

    def encode(self, batch: PromptBatch) -> Encoded:
        """Encoder once per clip. ``Encoded``: the decoder prefixes ``prefix``/``prefix_mask`` [B, L] and
        ``source`` [B] (the encoder row of each prompt; :meth:`Encoded.repeat` repeats these, never the
        encoder output, which stays in ``extra["encoder_hidden"]`` [B, S, d])."""
        hidden = self.encoder_outputs(self._features(batch.audio))
        ids, mask = left_pad_ids([self.prefix_ids(t) for t in batch.text], self.pad_token_id)
        source = torch.arange(len(batch.text), device=self.device)
        return Encoded({"prefix": ids.to(self.device), "prefix_mask": mask.to(self.device), "source": source},
                       {"encoder_hidden": hidden})

    def cross_attention_cache(self, enc: Encoded) -> Any:
        """An ``EncoderDecoderCache`` for the teacher-forced decoder whose cross-attention keys/values
        are computed once per clip and gathered for the decoder rows."""
        from transformers import DynamicCache, EncoderDecoderCache

        source = enc["source"]
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for i, (keys, values) in enumerate(cross_keys_values(self.model.model.decoder, enc.extra["encoder_hidden"])):
            cache.cross_attention_cache.update(keys[source], values[source], i)
            cache.is_updated[i] = True
        return cache

    def _decoder_logits(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, enc: Encoded,
                        cache: Any, keep: int | None = None) -> torch.Tensor:
        hidden = self.model.model.decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                                          encoder_hidden_states=enc.extra["encoder_hidden"], past_key_values=cache,
                                          use_cache=True).last_hidden_state
        return self.model.proj_out(hidden if keep is None else hidden[:, -keep:])

    # -- Policy ---------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, return_logps: bool = False) -> Any:
        """Completion ids [N, T] (prefix removed), right-padded with EOS after it; ``(ids, logps)`` with
        ``return_logps=True`` (the sampled tokens' log-probs at ``temperature``, before top-p/k, as
        :meth:`completion_logps` scores them). One decoder step a token
        (:func:`speechrl.models.decoding.decode_cached`) through
        :class:`~speechrl.models.native.whisper_decoder.SharedClipDecoder`: the G rows of a clip attend to
        its cross-attention keys/values in one product, the self-attention cache is preallocated.
        Nothing of Whisper's ``generate`` (suppressed or forced tokens) is applied."""
        from speechrl.models.decoding import decode_cached, sample_next

        prefix = enc["prefix"]
        max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - prefix.shape[1])
        t = temperature if do_sample else 0.0
        logps: list[torch.Tensor] = []

        def pick(logits: torch.Tensor, _step: int) -> torch.Tensor:
            nxt = sample_next(logits, t, top_k, top_p)
            if return_logps:
                logps.append(token_logps(logits[:, None], nxt[:, None], t or 1.0)[:, 0])
            return nxt

        decoder = SharedClipDecoder(self.model.model.decoder, enc.extra["encoder_hidden"], enc["source"],
                                    prefix.shape[1] + max_new_tokens)
        ids = decode_cached(lambda x, m, pos, _c: self.model.proj_out(decoder(x, m, pos)).float(),
                            prefix, enc["prefix_mask"], lambda tok: tok[:, None], pick, max_new_tokens,
                            self.eos_token_id, cache=decoder)
        if not return_logps:
            return ids
        return ids, (torch.stack(logps, 1) if logps else ids.new_zeros(ids.shape, dtype=torch.float32))

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(o_t | audio, prefix, o_<t) for every completion token [N, T] (teacher-forced decoder;
        logits / T; cross-attention keys/values once per clip)."""
        prefix, prefix_mask = enc["prefix"], enc["prefix_mask"]
        ids = torch.cat([prefix, completion_ids], dim=1)
        mask = torch.cat([prefix_mask, completion_mask.to(prefix_mask.dtype)], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        t = completion_ids.shape[1]
        logits = self._decoder_logits(ids, mask, positions, enc, self.cross_attention_cache(enc), keep=t + 1)
        return token_logps(logits[:, :-1], completion_ids, temperature)
