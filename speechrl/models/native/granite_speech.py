"""Granite Speech (``GraniteSpeechForConditionalGeneration``: conformer CTC encoder + windowed Q-Former
projector + Granite LM) as a policy, with its log-mel features computed without torchaudio."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from speechrl.models.native.common import (SAMPLE_RATE, DecoderOnlySpeechPolicy, _settings_from, _token_id,
                                           as_float_audio, check_audio_slots, merge_hf_adapters)

# Granite 3.x chat layout with a fixed system prompt (the hub chat template inserts today's date,
# which would make the policy's prompt change from day to day).
GRANITE_SPEECH_TEMPLATE = ("<|start_of_role|>system<|end_of_role|>You are Granite, developed by IBM. "
                           "You are a helpful AI assistant.<|end_of_text|>\n"
                           "<|start_of_role|>user<|end_of_role|>{audio}{text}<|end_of_text|>\n"
                           "<|start_of_role|>assistant<|end_of_role|>")


class GraniteLogMel:
    """Granite Speech's audio features without torchaudio.

    ``GraniteSpeechFeatureExtractor`` needs torchaudio (``MelSpectrogram``); this computes the same
    thing with ``torch.stft`` and transformers' ``mel_filter_bank`` (HTK scale, no norm — torchaudio's
    defaults): power mel → log10 (floor 1e-10) → max(x, max−8)/4 + 1 → drop a last odd frame → stack
    frame pairs: [frames/2, 2·n_mels] per clip. One clip at a time and unpadded: this equals the HF
    extractor's output for that clip alone (batched, it zero-pads clips to the longest one, and the
    padding then enters the encoder too, so HF's batched results depend on the batch).
    """

    def __init__(self, sampling_rate: int = SAMPLE_RATE, n_fft: int = 512, win_length: int = 400,
                 hop_length: int = 160, n_mels: int = 80, projector_window_size: int = 15,
                 projector_downsample_rate: int = 5):
        from transformers.audio_utils import mel_filter_bank

        self.sampling_rate, self.n_fft, self.win_length = sampling_rate, n_fft, win_length
        self.hop_length, self.n_mels = hop_length, n_mels
        self.projector_window_size, self.projector_downsample_rate = projector_window_size, projector_downsample_rate
        self.filters = torch.from_numpy(mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
            max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm=None, mel_scale="htk")).float()
        self.window = torch.hann_window(win_length)

    def __call__(self, wav: Any) -> np.ndarray:
        x = torch.from_numpy(as_float_audio(wav))
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)  # [freq, frames]
        logmel = (self.filters.T @ spec).T.clamp(min=1e-10).log10()
        logmel = torch.maximum(logmel, logmel.max() - 8.0) / 4 + 1
        if logmel.shape[0] % 2:
            logmel = logmel[:-1]
        return logmel.reshape(-1, 2 * self.n_mels).numpy()

    def num_embeddings(self, num_samples: int) -> int:
        """Audio embeddings (placeholder tokens) for a clip of ``num_samples`` (the processor's count)."""
        frames = (num_samples // self.hop_length + 1) // 2
        return math.ceil(frames / self.projector_window_size) * (
            self.projector_window_size // self.projector_downsample_rate)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_extractor_type": "GraniteSpeechFeatureExtractor", "processor_class": "GraniteSpeechProcessor",
                "sampling_rate": self.sampling_rate, "n_fft": self.n_fft, "win_length": self.win_length,
                "hop_length": self.hop_length, "n_mels": self.n_mels,
                "projector_window_size": self.projector_window_size,
                "projector_downsample_rate": self.projector_downsample_rate}

    def save_pretrained(self, folder: str | Path) -> None:
        """``preprocessor_config.json`` in the HF extractor's format (loadable by it where torchaudio is)."""
        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_config_dict(cls, d: dict[str, Any]) -> "GraniteLogMel":
        for nested in ("audio_processor", "feature_extractor"):
            if isinstance(d.get(nested), dict):
                d = d[nested]
        mel_kw = d.get("melspec_kwargs") or {}
        names = {"sampling_rate": "sample_rate", "n_fft": "n_fft", "win_length": "win_length",
                 "hop_length": "hop_length", "n_mels": "n_mels"}
        kw = {k: d.get(k, mel_kw.get(alias)) for k, alias in names.items()}
        kw.update(projector_window_size=d.get("projector_window_size"),
                  projector_downsample_rate=d.get("projector_downsample_rate"))
        return cls(**{k: v for k, v in kw.items() if v is not None})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "GraniteLogMel":
        from transformers import GraniteSpeechFeatureExtractor

        d, _ = GraniteSpeechFeatureExtractor.get_feature_extractor_dict(str(path))
        return cls.from_config_dict(d)

    @classmethod
    def from_extractor(cls, fe: Any) -> "GraniteLogMel":
        """From a ``GraniteSpeechFeatureExtractor`` (or anything with its attributes)."""
        if isinstance(fe, cls):
            return fe
        d = {"melspec_kwargs": fe.melspec_kwargs, "projector_window_size": fe.projector_window_size,
             "projector_downsample_rate": fe.projector_downsample_rate}
        return cls.from_config_dict(d)


class GraniteSpeechPolicy(DecoderOnlySpeechPolicy):
    """``GraniteSpeechForConditionalGeneration`` as a policy.

    Features: :class:`GraniteLogMel` (stacked log-mel [frames/2, 160], unpadded). ``encode``:
    ``get_audio_features`` (conformer encoder → windowed Q-Former projector) run on clips of equal
    length together and never on padding (the encoder has no attention mask and the projector pads to
    whole windows, so a padded batch would change a clip's embeddings), then the model's own
    ``get_merged_audio_embeddings`` over ``<|audio|>`` × n in ``template``.

    ``logits_scaling``: Granite LMs divide their logits by ``text_config.logits_scaling`` (8–16 for
    Granite 3.x); ``GraniteSpeechForConditionalGeneration`` in transformers 5.x applies its ``lm_head``
    without it (4.x went through ``GraniteForCausalLM``, which did). With ``apply_logits_scaling=True``
    (default) a forward hook on ``lm_head`` restores the division, for generation and scoring alike.

    Granite Speech checkpoints ship an audio-only LoRA adapter that transformers attaches at load and
    enables only when ``input_features`` are passed; prompts here always carry audio, so the adapter
    is merged into the weights at construction.
    """

    hf_class = "GraniteSpeechForConditionalGeneration"

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: Any = None,
                 template: str = GRANITE_SPEECH_TEMPLATE, eos_token: str | None = None,
                 audio_token: str = "<|audio|>", apply_logits_scaling: bool = True):
        model = merge_hf_adapters(model)
        fe = GraniteLogMel.from_extractor(feature_extractor) if feature_extractor is not None else GraniteLogMel(
            n_mels=model.config.encoder_config.input_dim // 2, projector_window_size=model.config.window_size,
            projector_downsample_rate=model.config.downsample_rate)
        eos_id = _token_id(tokenizer, eos_token, required=True) if eos_token else None
        tid = _token_id(tokenizer, audio_token, required=False)
        if tid is not None and tid != model.config.audio_token_id:
            raise ValueError(f"{audio_token!r} is token {tid} but the model's audio_token_id is "
                             f"{model.config.audio_token_id}")
        super().__init__(model, tokenizer, fe, template, eos_id,
                         {"template": template, "eos_token": eos_token, "audio_token": audio_token,
                          "apply_logits_scaling": apply_logits_scaling})
        scale = float(getattr(model.config.text_config, "logits_scaling", 1.0) or 1.0)
        self.logits_scaling = scale if apply_logits_scaling else 1.0
        if self.logits_scaling != 1.0 and not getattr(model.lm_head, "_speechrl_scaled", False):
            scale = self.logits_scaling
            model.lm_head.register_forward_hook(lambda _m, _i, out: out / scale)
            model.lm_head._speechrl_scaled = True

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer: Any = None, feature_extractor: Any = None,
                        dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                        trust_remote_code: bool = False, **settings: Any) -> "GraniteSpeechPolicy":
        from transformers import AutoTokenizer

        path = str(path)
        model = cls._load_model(path, dtype, device, trust_remote_code)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if feature_extractor is None:  # the HF processor needs torchaudio; its settings are all we need
            try:
                feature_extractor = GraniteLogMel.from_pretrained(path)
            except OSError:  # no preprocessor_config.json: the defaults, sized from the model config
                feature_extractor = None
        return cls(model, tokenizer, feature_extractor, **{**_settings_from(path), **settings})

    @staticmethod
    def featurize_with(extractor: Any, audio: Any) -> dict[str, np.ndarray]:
        return {"mel": extractor(audio)}

    def audio_embeddings(self, feats: list[dict[str, np.ndarray]]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(feats)
        by_length: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            by_length.setdefault(len(f["mel"]), []).append(i)
        for idx in by_length.values():
            x = torch.stack([torch.as_tensor(feats[i]["mel"]) for i in idx]).to(self.device, self.dtype)
            emb = self.model.model.get_audio_features(x, return_dict=True).pooler_output
            for j, i in enumerate(idx):
                out[i] = emb[j]
        return out

    def merge_audio(self, input_ids: torch.Tensor, audio: list[torch.Tensor]) -> torch.Tensor:
        check_audio_slots(input_ids, self.audio_token_id, audio)
        return self.model.model.get_merged_audio_embeddings(input_ids, torch.cat(audio))
