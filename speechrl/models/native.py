"""Native Hugging Face speech LMs behind the :class:`~speechrl.models.policy.Policy` interface.

Three wrappers, so that SFT, GRPO and evaluation run unchanged on hub checkpoints:

:class:`Qwen2AudioPolicy`
    ``Qwen2AudioForConditionalGeneration`` (Whisper-style encoder + linear projector + Qwen2 LM).
:class:`GraniteSpeechPolicy`
    ``GraniteSpeechForConditionalGeneration`` (conformer CTC encoder + windowed Q-Former projector +
    Granite LM).
:class:`WhisperPolicy`
    ``WhisperForConditionalGeneration`` as an encoder–decoder policy.

and :func:`load_policy`, which picks the class from a checkpoint's ``config.json`` (or loads our own
:class:`~speechrl.models.speech_lm.SpeechLM` folder)::

    policy = load_policy("Qwen/Qwen2-Audio-7B-Instruct", dtype=torch.bfloat16, device="cuda")
    feats = [policy.featurize(wav) for wav in wavs]            # cacheable numpy dicts
    enc = policy.encode(PromptBatch(feats, ["Transcribe the audio."] * len(feats))).repeat(8)
    ids = policy.generate(enc, max_new_tokens=64, do_sample=True, top_p=0.9)
    logps = policy.completion_logps(enc, ids, completion_mask(ids, policy.eos_token_id))

``generate(..., return_logps=True)`` returns ``(ids, logps)``: the generated tokens' log-probs under the
raw next-token distribution (what teacher forcing computes; the rollout/trainer parity check).

Scheme (all three). ``featurize`` turns one 16 kHz waveform into the model's features (cached on
disk by the corpus builders). ``encode`` runs the audio encoder and projector **once** per prompt.
For the decoder-only models the audio embeddings are then written into the prompt's token
embeddings at the audio-placeholder positions (the processor's expansion: one placeholder token per
audio embedding), the prompt is left-padded, and ``Encoded`` holds ``embeds`` [B, P, D] + ``mask``
[B, P], exactly like :class:`SpeechLM`. ``generate`` and ``completion_logps`` feed ``inputs_embeds``
with position ids counted from the attention mask, so padding never shifts a position. For Whisper
``Encoded`` holds the encoder output and the left-padded decoder prefix.

Decoding is deliberately plain: the checkpoint's ``generation_config`` (repetition penalty,
suppressed/forced tokens, its own top-k/top-p/temperature, …) is **not** applied, only the
arguments of :meth:`generate`. The distribution that is sampled is therefore exactly the one
``completion_logps`` scores (a requirement for policy-gradient training); greedy ASR output can
differ slightly from the checkpoint's own ``generate`` (e.g. Whisper's suppressed tokens).

Training notes. Each policy is an ``nn.Module`` holding the HF model as ``.model``; ``.lm`` is the
language-model part (the decoder for Whisper) for peft LoRA (``policy.lm = get_peft_model(policy.lm,
cfg)`` works: peft injects its layers in place). ``save_pretrained`` writes a plain HF folder
(safetensors) with any such LoRA merged into the saved weights, without touching the live model,
plus the tokenizer, the feature extractor and ``native_policy.json`` (the policy's settings).
``train()`` leaves BatchNorm layers (Granite's conformer) in eval mode: batch statistics over padded
audio would make one clip's embedding depend on its batch mates.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.policy import Encoded, PromptBatch, generated_logps

SAMPLE_RATE = 16000
SETTINGS_FILE = "native_policy.json"

__all__ = ["Qwen2AudioPolicy", "GraniteSpeechPolicy", "WhisperPolicy", "GraniteLogMel", "load_policy",
           "POLICIES", "QWEN2_AUDIO_TEMPLATE", "GRANITE_SPEECH_TEMPLATE"]

# The Qwen2-Audio processor's chat layout (its default chat template, one audio clip).
QWEN2_AUDIO_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\nAudio 1: {audio}\n{text}<|im_end|>\n<|im_start|>assistant\n")
# Granite 3.x chat layout with a fixed system prompt (the hub chat template inserts today's date,
# which would make the policy's prompt change from day to day).
GRANITE_SPEECH_TEMPLATE = ("<|start_of_role|>system<|end_of_role|>You are Granite, developed by IBM. "
                           "You are a helpful AI assistant.<|end_of_text|>\n"
                           "<|start_of_role|>user<|end_of_role|>{audio}{text}<|end_of_text|>\n"
                           "<|start_of_role|>assistant<|end_of_role|>")


# ---------------------------------------------------------------------------------------------
# shared helpers


def as_float_audio(wav: Any) -> np.ndarray:
    return np.ascontiguousarray(wav, dtype=np.float32)


def whisper_mel_features(extractor: Any, wav: Any) -> dict[str, np.ndarray]:
    """A ``WhisperFeatureExtractor``'s output for one clip (padded to the model's window, exactly as
    the processors do), stored compactly: ``mel`` [n_mels, t] up to the last frame that differs from
    the padding frame, ``pad`` [n_mels] (that frame), ``frames`` (the full window) and ``length`` (frames
    covered by audio). :func:`collate_mel` restores the full array bit for bit."""
    out = extractor(as_float_audio(wav), sampling_rate=SAMPLE_RATE, padding="max_length",
                    return_attention_mask=True, return_tensors="np")
    mel = out["input_features"][0].astype(np.float32)
    pad = mel[:, -1].copy()
    differs = np.flatnonzero(~np.all(mel == pad[:, None], axis=0))
    keep = int(differs[-1]) + 1 if differs.size else 0
    return {"mel": np.ascontiguousarray(mel[:, :keep]), "pad": pad, "frames": np.asarray(mel.shape[1]),
            "length": np.asarray(int(out["attention_mask"][0].sum()))}


def collate_mel(feats: list[dict[str, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature dicts of :func:`whisper_mel_features` → (mel [B, n_mels, frames], lengths [B])."""
    frames = int(feats[0]["frames"])
    mel = torch.stack([torch.as_tensor(f["pad"])[:, None].repeat(1, frames) for f in feats])
    for i, f in enumerate(feats):
        mel[i, :, : f["mel"].shape[1]] = torch.as_tensor(f["mel"])
    return mel, torch.tensor([int(f["length"]) for f in feats], dtype=torch.long)


@contextmanager
def plain_generation(model: PreTrainedModel) -> Iterator[None]:
    """Generate without the checkpoint's generation defaults (see module docstring)."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id, decoder_start_token_id=saved.decoder_start_token_id)
    try:
        yield
    finally:
        model.generation_config = saved


def sampling_kwargs(do_sample: bool, temperature: float, top_p: float, top_k: int) -> dict[str, Any]:
    return dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else \
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """``model``'s state dict with peft layers injected by ``get_peft_model`` folded back: LoRA weights
    added to their base weights (W + ΔW of the active adapters) and every key under the base model's
    name; ``None`` when no peft layer is there. The live model is not modified (training can go on
    after a checkpoint)."""
    state = model.state_dict()
    if not any(".base_layer." in k or ".modules_to_save." in k for k in state):
        return None
    from peft.tuners.tuners_utils import BaseTunerLayer

    clean = {}
    for key, value in state.items():
        if ".lora_" in key or ".original_module." in key:
            continue
        clean[re.sub(r"\.modules_to_save\.[^.]+\.", ".", key.replace(".base_layer.", "."))] = value
    for name, layer in model.named_modules():
        if not isinstance(layer, BaseTunerLayer) or layer.merged or layer.disable_adapters:
            continue
        adapters = [a for a in layer.active_adapters if a in getattr(layer, "lora_A", {})]
        if any(getattr(layer, "use_dora", {}).get(a) for a in adapters):
            raise NotImplementedError("saving a DoRA-wrapped policy is not supported; merge it first")
        if adapters:
            weight = clean[f"{name}.weight"]
            delta = sum(layer.get_delta_weight(a) for a in adapters)
            clean[f"{name}.weight"] = (weight.detach() + delta.detach()).to(weight.dtype)
    return clean


def merge_hf_adapters(model: PreTrainedModel) -> PreTrainedModel:
    """Fold adapters that ``from_pretrained`` attached through transformers' peft integration
    (Granite Speech checkpoints ship an audio-only LoRA) into the weights, leaving plain layers."""
    if not getattr(model, "_hf_peft_config_loaded", False):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    model._hf_peft_config_loaded = False
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def _settings_from(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / SETTINGS_FILE
    return json.loads(path.read_text())["settings"] if path.is_file() else {}


def _load_tokenizer_and_extractor(path: str, extractor_cls: type, trust_remote_code: bool) -> tuple[Any, Any]:
    """The checkpoint's processor when it loads (tokenizer + feature extractor), else both separately."""
    from transformers import AutoProcessor, AutoTokenizer

    try:
        proc = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        tok, fe = getattr(proc, "tokenizer", None), getattr(proc, "feature_extractor", None)
        if tok is not None and isinstance(fe, extractor_cls):
            return tok, fe
    except Exception:  # no processor files, or a processor this install cannot build
        pass
    return (AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code),
            extractor_cls.from_pretrained(path))


def _default_whisper_extractor(num_mel_bins: int, max_source_positions: int):
    """The Whisper feature extractor for an encoder whose window is 2 × ``max_source_positions`` frames
    (10 ms each): 30 s for real checkpoints."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=num_mel_bins, chunk_length=max(1, max_source_positions // 50))


# ---------------------------------------------------------------------------------------------
# base class


class NativePolicy(nn.Module):
    """What the three wrappers share: settings, device, train mode, generation and persistence."""

    hf_class: str  # the transformers model class this policy wraps
    lm: nn.Module

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: Any,
                 eos_token_id: int | None, settings: dict[str, Any]):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.settings = settings
        self.eos_token_id = int(eos_token_id if eos_token_id is not None else tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_id)

    def _set_lm(self, module: nn.Module) -> None:
        # a plain attribute, not a second registration of a submodule of ``model`` (which would list its
        # weights twice in state_dict()); assigning a peft wrapper to ``policy.lm`` works as usual
        object.__setattr__(self, "lm", module)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                temperature: float = 1.0) -> torch.Tensor:
        """``completion_logps`` (so accelerate/DDP-wrapped training goes through ``forward``)."""
        return self.completion_logps(enc, completion_ids, completion_mask, temperature)

    def train(self, mode: bool = True) -> "NativePolicy":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def _features(self, audio: list[Any]) -> list[dict[str, np.ndarray]]:
        """``PromptBatch.audio`` items: feature dicts, or waveforms (featurized on the fly)."""
        return [a if isinstance(a, dict) else self.featurize(a) for a in audio]

    @torch.no_grad()
    def _generate(self, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, top_k: int,
                  return_logps: bool, **inputs: Any) -> Any:
        with plain_generation(self.model):
            # GenerationMixin.generate itself: Granite's override toggles its audio LoRA off whenever no
            # input_features are passed, Whisper's adds its forced/suppressed-token machinery
            out = GenerationMixin.generate(
                self.model, **inputs, max_new_tokens=max_new_tokens, eos_token_id=self.eos_token_id,
                pad_token_id=self.pad_token_id, output_logits=return_logps,
                return_dict_in_generate=return_logps, **sampling_kwargs(do_sample, temperature, top_p, top_k))
        return out

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> Path:
        """A HF checkpoint folder (safetensors; LoRA on ``lm`` merged in the saved weights), the tokenizer,
        the feature extractor and ``native_policy.json``; :func:`load_policy` reads it back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = merged_state_dict(self.model)
        if state is None:
            self.model.save_pretrained(folder)
        else:
            self.model.save_pretrained(folder, state_dict=state)
        self.tokenizer.save_pretrained(folder)
        self.feature_extractor.save_pretrained(folder)
        (folder / SETTINGS_FILE).write_text(json.dumps({"class": type(self).__name__, "settings": self.settings},
                                                       indent=2))
        return folder

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer: Any = None, feature_extractor: Any = None,
                        dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
                        trust_remote_code: bool = False, **settings: Any) -> "NativePolicy":
        """Load a hub id or folder (safetensors; tokenizer and Whisper-style feature extractor from it)."""
        from transformers import WhisperFeatureExtractor

        path = str(path)
        model = cls._load_model(path, dtype, device, trust_remote_code)
        if tokenizer is None or feature_extractor is None:
            tok, fe = _load_tokenizer_and_extractor(path, WhisperFeatureExtractor, trust_remote_code)
            tokenizer, feature_extractor = tokenizer or tok, feature_extractor or fe
        return cls(model, tokenizer, feature_extractor, **{**_settings_from(path), **settings})

    @classmethod
    def _load_model(cls, path: str, dtype: torch.dtype, device: str | torch.device | None,
                    trust_remote_code: bool) -> PreTrainedModel:
        import transformers

        model_cls = getattr(transformers, cls.hf_class)
        model = model_cls.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                          trust_remote_code=trust_remote_code)
        return model.to(device) if device is not None else model


class DecoderOnlySpeechPolicy(NativePolicy):
    """Audio embeddings spliced into a decoder-only LM's prompt (Qwen2-Audio, Granite Speech).

    Subclasses give the placeholder layout (``_audio_open``/``_audio_close`` around ``n`` copies of
    the audio token) and :meth:`audio_embeddings`.
    """

    _audio_open = ""
    _audio_close = ""

    def __init__(self, model: PreTrainedModel, tokenizer: Any, feature_extractor: Any, template: str,
                 eos_token_id: int | None, settings: dict[str, Any]):
        super().__init__(model, tokenizer, feature_extractor, eos_token_id, settings)
        if template.count("{audio}") != 1 or template.count("{text}") != 1:
            raise ValueError("a prompt template needs exactly one {audio} and one {text}")
        self.template = template
        self.audio_token_id = int(model.config.audio_token_id)
        self._text_cache: dict[str, tuple[list[int], list[int]]] = {}
        self._set_lm(model.model.language_model)

    # -- Policy ---------------------------------------------------------------------------------
    def audio_embeddings(self, feats: list[dict[str, np.ndarray]]) -> list[torch.Tensor]:
        """Encoder + projector → one [n_i, D] tensor per clip (only the clip's own embeddings)."""
        raise NotImplementedError

    def merge_audio(self, input_ids: torch.Tensor, audio: list[torch.Tensor]) -> torch.Tensor:
        """Token embeddings with the audio embeddings written at the audio-token positions, in order."""
        embeds = self.model.get_input_embeddings()(input_ids.masked_fill(input_ids == self.audio_token_id, 0))
        where = (input_ids == self.audio_token_id).unsqueeze(-1)
        return embeds.masked_scatter(where, torch.cat(audio).to(embeds.dtype))

    def _text_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the run of audio placeholders."""
        if instruction not in self._text_cache:
            head, tail = self.template.split("{audio}")
            head = head.replace("{text}", instruction) + self._audio_open
            tail = self._audio_close + tail.replace("{text}", instruction)
            self._text_cache[instruction] = tuple(self.tokenizer(t, add_special_tokens=False)["input_ids"]
                                                  for t in (head, tail))
        return self._text_cache[instruction]

    def prompt_ids(self, num_audio: int, instruction: str) -> list[int]:
        """The prompt's token ids with ``num_audio`` audio placeholders (what the processor produces)."""
        head, tail = self._text_ids(instruction)
        return head + [self.audio_token_id] * num_audio + tail

    def encode(self, batch: PromptBatch) -> Encoded:
        """Encoder once per prompt → left-padded prompt embeddings ``embeds`` [B, P, D] + ``mask``."""
        audio = self.audio_embeddings(self._features(batch.audio))
        rows = [self.prompt_ids(a.shape[0], text) for a, text in zip(audio, batch.text)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return Encoded({"embeds": self.merge_audio(ids, audio), "mask": mask})

    def generate(self, enc: Encoded, max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, return_logps: bool = False) -> Any:
        """Completion ids [N, T] (T ≤ ``max_new_tokens``), right-padded after EOS. With
        ``return_logps=True``: ``(ids, logps)`` (:func:`~speechrl.models.policy.generated_logps`)."""
        out = self._generate(max_new_tokens, do_sample, temperature, top_p, top_k, return_logps,
                             inputs_embeds=enc["embeds"], attention_mask=enc["mask"])
        ids = out.sequences if return_logps else out
        ids = ids[:, -max_new_tokens:] if ids.shape[1] > max_new_tokens else ids
        return (ids, generated_logps(out, ids, temperature if do_sample else 1.0)) if return_logps else ids

    def completion_logps(self, enc: Encoded, completion_ids: torch.Tensor, completion_mask: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
        """log π_T(o_t | prompt, o_<t) for every completion token [N, T] (teacher forcing; logits / T)."""
        embeds, mask = enc["embeds"], enc["mask"]
        comp = self.model.get_input_embeddings()(completion_ids)
        full_mask = torch.cat([mask, completion_mask.to(mask.dtype)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.model.language_model(inputs_embeds=torch.cat([embeds, comp.to(embeds.dtype)], dim=1),
                                                 attention_mask=full_mask, position_ids=positions,
                                                 use_cache=False).last_hidden_state
        p = embeds.shape[1]
        return token_logps(self.model.lm_head(hidden[:, p - 1: -1]), completion_ids, temperature)


# ---------------------------------------------------------------------------------------------
# Qwen2-Audio


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


    def featurize(self, audio: Any) -> dict[str, np.ndarray]:
        return whisper_mel_features(self.feature_extractor, audio)

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


def _token_id(tokenizer: Any, token: str, required: bool) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        if required:
            raise ValueError(f"the tokenizer has no token {token!r}")
        return None
    return int(tid)


# ---------------------------------------------------------------------------------------------
# Granite Speech


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

    def featurize(self, audio: Any) -> dict[str, np.ndarray]:
        return {"mel": self.feature_extractor(audio)}

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
        return self.model.model.get_merged_audio_embeddings(input_ids, torch.cat(audio))


# ---------------------------------------------------------------------------------------------
# Whisper


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
        rows = [self.prefix_ids(t) for t in batch.text]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
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


# ---------------------------------------------------------------------------------------------


POLICIES: dict[str, type[NativePolicy]] = {"qwen2_audio": Qwen2AudioPolicy, "granite_speech": GraniteSpeechPolicy,
                                           "whisper": WhisperPolicy}


def load_policy(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32,
                device: str | torch.device | None = None, trust_remote_code: bool = False, **kw: Any) -> nn.Module:
    """A policy from a checkpoint: our :class:`SpeechLM` folder (``speech_lm.json``) or a HF folder / hub
    id whose ``config.json`` ``model_type`` is ``qwen2_audio``, ``granite_speech`` or ``whisper``.
    ``kw`` go to the class's ``from_pretrained`` (tokenizer, feature_extractor, template, …)."""
    path = Path(name_or_path)
    if (path / "speech_lm.json").is_file():
        from speechrl.models.speech_lm import SpeechLM

        policy = SpeechLM.from_pretrained(path)
        return policy.to(device) if device is not None else policy
    from transformers import PreTrainedConfig

    if path.is_dir() and not (path / "config.json").is_file():
        raise ValueError(f"{name_or_path}: no config.json (nor speech_lm.json) to load a policy from")
    try:
        config, _ = PreTrainedConfig.get_config_dict(str(name_or_path), trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"{name_or_path}: no config.json (nor speech_lm.json) to load a policy from") from err
    model_type = config.get("model_type")
    if model_type not in POLICIES:
        raise ValueError(f"{name_or_path}: model_type {model_type!r} is not supported; supported: "
                         f"{sorted(POLICIES)} or a SpeechLM folder (speech_lm.json)")
    return POLICIES[model_type].from_pretrained(str(name_or_path), dtype=dtype, device=device,
                                               trust_remote_code=trust_remote_code, **kw)
