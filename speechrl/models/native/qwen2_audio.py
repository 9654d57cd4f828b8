"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``: Whisper-style encoder + linear projector + Qwen2 LM)
as a policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from speechrl.models.native.common import DecoderOnlySpeechPolicy, _default_whisper_extractor, _token_id, collate_mel

# The Qwen2-Audio processor's chat layout (its default chat template, one audio clip).
QWEN2_AUDIO_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\nAudio 1: {audio}\n{text}<|im_end|>\n<|im_start|>assistant\n")


class Qwen2AudioPolicy(DecoderOnlySpeechPolicy):
    """``Qwen2AudioForConditionalGeneration`` as a policy.

    Features: the processor's ``WhisperFeatureExtractor`` (128 mels, padded to the 30-s window; longer
    audio is cut there, as the processor does), stored compactly (:func:`whisper_mel_features`).
    ``encode``: ``audio_tower`` (with the attention mask the model builds) → ``multi_modal_projector``
    → the clip's first ``_get_feat_extract_output_lengths`` embeddings written over as many
    ``<|AUDIO|>`` tokens between ``<|audio_bos|>`` and ``<|audio_eos|>``. ``template`` holds ``{audio}``
    and ``{text}``; the default is the processor's chat layout (Instruct checkpoints; use e.g.
    ``"{audio}{text}"`` with ``eos_token="<|endoftext|>"`` for the base model). ``eos_token``: where a
    completion ends (default ``<|im_end|>`` when the tokenizer has it, else its EOS).
    """

    hf_class = "Qwen2AudioForConditionalGeneration"
    _audio_open = "<|audio_bos|>"
    _audio_close = "<|audio_eos|>"

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: Any = None,
                 template: str = QWEN2_AUDIO_TEMPLATE, eos_token: str | None = None):
        if feature_extractor is None:
            cfg = model.config.audio_config
            feature_extractor = _default_whisper_extractor(cfg.num_mel_bins, cfg.max_source_positions)
        eos_id = _token_id(tokenizer, eos_token or "<|im_end|>", required=eos_token is not None)
        super().__init__(model, tokenizer, feature_extractor, template, eos_id,
                         {"template": template, "eos_token": eos_token})


    def audio_embeddings(self, feats: list[dict[str, np.ndarray]]) -> list[torch.Tensor]:
        from transformers.masking_utils import create_bidirectional_mask

        inner = self.model.model
        tower = inner.audio_tower
        mel, lengths = collate_mel(feats)
        mel, lengths = mel.to(self.device, self.dtype), lengths.to(self.device)
        # as in Qwen2AudioModel.forward (transformers 5.23 has no get_audio_features for it)
        conv_lengths, out_lengths = tower._get_feat_extract_output_lengths(lengths)
        width = (mel.shape[-1] - 2) // 2 + 1
        mask_2d = (torch.arange(width, device=self.device)[None, :] < conv_lengths[:, None]).long()
        attn = create_bidirectional_mask(config=tower.config, inputs_embeds=mel.new_zeros(len(feats), width, 1),
                                         attention_mask=mask_2d)
        hidden = tower(mel, attention_mask=attn).last_hidden_state
        audio = inner.multi_modal_projector(hidden)
        return [audio[i, : int(n)] for i, n in enumerate(out_lengths)]
