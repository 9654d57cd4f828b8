"""Native Hugging Face speech LMs behind the :class:`~speechrl.models.policy.Policy` interface.

Three wrappers that implement the policy interface (encode, generate, completion_logps) on hub checkpoints;
the speech recipes build one from ``model.policy``, and the trainers take any object with that interface:

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

One module per family (:mod:`~speechrl.models.native.qwen2_audio`,
:mod:`~speechrl.models.native.granite_speech`, :mod:`~speechrl.models.native.whisper`), what they share
in :mod:`~speechrl.models.native.common`; everything is importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

# the shared helpers other modules use, importable from here as before the split
from speechrl.models.native.common import NativePolicy, collate_mel, merged_state_dict, whisper_mel_features
from speechrl.models.native.granite_speech import GRANITE_SPEECH_TEMPLATE, GraniteLogMel, GraniteSpeechPolicy
from speechrl.models.native.qwen2_audio import QWEN2_AUDIO_TEMPLATE, Qwen2AudioPolicy
from speechrl.models.native.whisper import WhisperPolicy

__all__ = ["Qwen2AudioPolicy", "GraniteSpeechPolicy", "WhisperPolicy", "GraniteLogMel", "load_policy",
           "POLICIES", "QWEN2_AUDIO_TEMPLATE", "GRANITE_SPEECH_TEMPLATE", "NativePolicy", "collate_mel",
           "merged_state_dict", "whisper_mel_features"]


POLICIES: dict[str, type[NativePolicy]] = {"qwen2_audio": Qwen2AudioPolicy, "granite_speech": GraniteSpeechPolicy,
                                           "whisper": WhisperPolicy}


def load_policy(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32,
                device: str | torch.device | None = None, trust_remote_code: bool = False, **kw: Any) -> nn.Module:
    """A policy from a checkpoint: our :class:`SpeechLM` folder (``speech_lm.json``) or a HF folder / hub
    id whose ``config.json`` ``model_type`` is ``qwen2_audio``, ``granite_speech`` or ``whisper``.
    ``kw`` go to the class's ``from_pretrained`` (tokenizer, feature_extractor, template, …). Offline names
    (``whisper-tiny.en``, ``whisper-base``: :func:`speechrl.models.hub.resolve`) load their converted folder."""
    from speechrl.models.hub import resolve

    name_or_path = resolve(str(name_or_path)) if isinstance(name_or_path, str) else name_or_path
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
