"""What the native policies share: feature helpers (Whisper-style mels), plain generation, merged LoRA
state dicts, checkpoint settings, and the base classes :class:`NativePolicy` and
:class:`DecoderOnlySpeechPolicy` (audio embeddings spliced into a decoder-only LM's prompt). The
scheme as a whole: :mod:`speechrl.models.native`."""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from speechrl.losses.logps import token_logps
from speechrl.models.policy import Encoded, PromptBatch, generated_logps, left_pad_ids

SAMPLE_RATE = 16000
SETTINGS_FILE = "native_policy.json"


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
    frames = int(np.asarray(feats[0]["frames"]).item())  # 0-d, or 1-element once read from the cache
    mel = torch.stack([torch.as_tensor(f["pad"])[:, None].repeat(1, frames) for f in feats])
    for i, f in enumerate(feats):
        mel[i, :, : f["mel"].shape[1]] = torch.as_tensor(f["mel"])
    return mel, torch.tensor([int(np.asarray(f["length"]).item()) for f in feats], dtype=torch.long)


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


def _token_id(tokenizer: Any, token: str, required: bool) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        if required:
            raise ValueError(f"the tokenizer has no token {token!r}")
        return None
    return int(tid)


def check_audio_slots(input_ids: torch.Tensor, audio_token_id: int, audio: list[torch.Tensor]) -> None:
    """Every prompt holds exactly as many audio placeholders as its clip has audio embeddings, or a
    ``ValueError`` names the rows: a mismatch would drop or shift audio silently when the embeddings are
    scattered into the placeholders."""
    slots = (input_ids == audio_token_id).sum(1).tolist()
    counts = [int(a.shape[0]) for a in audio]
    if slots != counts:
        bad = [f"row {i}: {s} placeholders, {c} audio embeddings" for i, (s, c) in enumerate(zip(slots, counts))
               if s != c]
        raise ValueError("audio placeholders do not match the encoder's output: "
                         + ("; ".join(bad[:3]) or f"{len(slots)} prompts, {len(counts)} clips"))


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

    @staticmethod
    def featurize_with(extractor: Any, audio: Any) -> dict[str, np.ndarray]:
        """One 16 kHz waveform → the model's features (default: Whisper-style log-mel, compactly stored)."""
        return whisper_mel_features(extractor, audio)

    def featurize(self, audio: Any) -> dict[str, np.ndarray]:
        return self.featurize_with(self.feature_extractor, audio)

    def featurizer(self) -> Callable[[Any], dict[str, np.ndarray]]:
        """:meth:`featurize` as a small picklable function (the feature extractor, not the model), for a
        process pool (:func:`speechrl.data.features.features`)."""
        return partial(type(self).featurize_with, self.feature_extractor)

    @property
    def feature_kind(self) -> str:
        """The name the features are cached under: the class and a hash of the extractor's settings (two
        checkpoints with the same extractor share their features; different ones never do)."""
        fe = self.feature_extractor
        values = fe.to_dict() if hasattr(fe, "to_dict") else vars(fe)
        plain = {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool, type(None)))}
        key = hashlib.sha1(json.dumps([type(fe).__name__, plain], sort_keys=True).encode()).hexdigest()[:10]
        return f"{type(self).__name__.removesuffix('Policy').lower()}-{key}"

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
        check_audio_slots(input_ids, self.audio_token_id, audio)
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
        ids, mask = left_pad_ids([self.prompt_ids(a.shape[0], text) for a, text in zip(audio, batch.text)],
                                 self.pad_token_id)
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
