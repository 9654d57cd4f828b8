"""Audio front ends: audio features → embeddings in the LM's hidden size (encoder + projector).

Featurising (audio → features) is a data-preparation step whose results are cached on disk;
the front end turns a padded batch of features into embeddings. Three front ends:

* ``units``   — hama phoneme units with durations (pretrained phoneme recogniser, offline default):
  unit + duration embeddings → conv → projector.
* ``mel``     — 80-bin log-mel (transformers' ``WhisperFeatureExtractor``) → 2 strided convs
  (4× down, 25 frames/s) → small transformer → 2-frame stacking (12.5 frames/s) → projector.
  Trained here from scratch.
* ``whisper`` — the encoder of a pretrained HF Whisper checkpoint (frozen, or LoRA-adapted) → 4-frame
  stacking (12.5 frames/s) → 2-layer MLP projector; its features are the encoder's own log-mel (the
  full 30-s window, as the HF encoder requires), and a frozen encoder's outputs can be computed once
  and reused (``hidden``: :meth:`WhisperFrontEnd.precompute`, or on disk through
  :func:`speechrl.data.features.cached_encodings`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MAX_DURATION = 24  # unit durations (50 frames/s) are clamped here before embedding


class UnitFrontEnd(nn.Module):
    """Phoneme units + durations → conv → (optional small transformer) → [B, A, out_dim].

    ASR SFT probe (6 LM layers, 250 steps): dev WER 0.57 without the transformer, 0.65 with 2 layers
    (better early: 1.04 vs 1.66 at step 50), so it is off by default."""

    kind = "units"

    def __init__(self, out_dim: int, num_units: int = 192, dim: int = 256, layers: int = 0, heads: int = 4):
        super().__init__()
        self.num_units = num_units
        self.unit = nn.Embedding(num_units + 1, dim, padding_idx=num_units)
        self.dur = nn.Embedding(MAX_DURATION + 1, dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.proj = nn.Sequential(nn.GELU(), nn.Linear(dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    @staticmethod
    def featurize(units: Any) -> dict[str, np.ndarray]:
        """A :class:`~speechrl.speech.units.Units` (deduplicated) → id and duration arrays."""
        durations = units.durations or [1] * len(units.ids)
        return {"ids": np.asarray(units.ids, dtype=np.int64), "durations": np.asarray(durations, dtype=np.int64)}

    def collate(self, feats: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = max(1, max(len(f["ids"]) for f in feats))
        ids = torch.full((len(feats), width), self.num_units, dtype=torch.long)
        dur = torch.zeros((len(feats), width), dtype=torch.long)
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, f in enumerate(feats):
            n = len(f["ids"])
            ids[i, :n] = torch.as_tensor(f["ids"]).clamp(0, self.num_units - 1)
            dur[i, :n] = torch.as_tensor(f["durations"]).clamp(0, MAX_DURATION)
            mask[i, :n] = 1
        return {"ids": ids, "durations": dur, "mask": mask}

    def forward(self, ids: torch.Tensor, durations: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.unit(ids) + self.dur(durations)
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        if self.encoder is not None:  # context: a phoneme's identity depends on its neighbours
            pad = mask == 0
            pad[:, 0] &= mask.any(1)  # a row without units attends to its pad slot (no NaN); masked later
            x = self.encoder(x, src_key_padding_mask=pad)
        return self.proj(x), mask


class MelFrontEnd(nn.Module):
    """Log-mel → [B, A, out_dim] at 12.5 frames/s, trained from scratch."""

    kind = "mel"

    def __init__(self, out_dim: int, n_mels: int = 80, dim: int = 256, layers: int = 2, heads: int = 4):
        super().__init__()
        self.n_mels = n_mels
        self.conv = nn.Sequential(nn.Conv1d(n_mels, dim, 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv1d(dim, dim, 3, stride=2, padding=1), nn.GELU())
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj = nn.Sequential(nn.Linear(2 * dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self._extractor = None

    def featurize(self, wav: np.ndarray) -> dict[str, np.ndarray]:
        """16 kHz waveform → log-mel [frames, n_mels] at 100 frames/s (no 30-s padding)."""
        if self._extractor is None:
            from transformers import WhisperFeatureExtractor

            self._extractor = WhisperFeatureExtractor(feature_size=self.n_mels)
        feats = self._extractor(wav, sampling_rate=16000, padding="longest", return_tensors="np")
        return {"mel": feats["input_features"][0].T.astype(np.float32)}

    def collate(self, feats: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        width = max(4, max(len(f["mel"]) for f in feats))
        mel = torch.zeros((len(feats), width, self.n_mels))
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, f in enumerate(feats):
            mel[i, : len(f["mel"])] = torch.as_tensor(f["mel"])
            mask[i, : len(f["mel"])] = 1
        return {"mel": mel, "mask": mask}

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(mel.transpose(1, 2)).transpose(1, 2)  # [B, F/4, dim]
        m = mask[:, ::4][:, : x.shape[1]]
        x = self.encoder(x, src_key_padding_mask=m == 0)
        if x.shape[1] % 2:
            x, m = nn.functional.pad(x, (0, 0, 0, 1)), nn.functional.pad(m, (0, 1))
        x = x.reshape(x.shape[0], x.shape[1] // 2, -1)
        return self.proj(x), m[:, ::2]


class WhisperFrontEnd(nn.Module):
    """A pretrained Whisper encoder (frozen; optionally LoRA-adapted) → 4-frame stacking → 2-layer MLP.

    The projector is Ultravox's / Qwen2-Audio's in miniature: the encoder's 50 frames/s are stacked 4 at a
    time (12.5 frames/s, 80 ms an LM position, like Granite Speech's windowed Q-former output) and a
    2-layer MLP (Linear 4·d → D, GELU, Linear D → D) maps them to the LM's hidden size D. Stacking keeps
    every encoder dimension (an average pool would blur them) at a quarter of the positions.

    ``encoder``: a name :func:`speechrl.models.hub.resolve` knows, a folder, or a hub id (an HF Whisper
    checkpoint; its feature extractor is used, or the default one for its mel bins and window).
    ``freeze``: the encoder gets no gradient and runs under ``no_grad``; ``lora_rank`` > 0 adds a peft LoRA
    (rank r, α = 2r) to the encoder's attention projections, which train with the projector while the
    base weights stay frozen. ``freeze=False`` trains the whole encoder.

    Only the frames that cover audio are kept (``length // 2`` encoder frames, then ceil(· / 4) positions);
    frames past a clip's audio are zeroed before stacking, so a clip's embeddings never depend on what else
    is in its batch or on whether its encoder output came from the cache. Saved state
    (:meth:`saved_state`): the projector and the LoRA weights; a frozen encoder's weights are not stored
    (the kwargs name the encoder, it is reloaded from there and checked against a digest).

    Encoder-output cache (the encoder dominates on CPU: tiny.en ≈ 1.3 s a 30-s-padded clip on 2 cores):
    while the encoder is frozen (no LoRA), :meth:`precompute` adds ``hidden`` (the audio frames' outputs,
    float32, [frames, d]) to feature dicts, and :meth:`collate`/:meth:`forward` use it instead of running
    the encoder; :attr:`encoder_cache_key` and :meth:`encoder_outputs` let
    :func:`speechrl.data.features.cached_encodings` (through :class:`~speechrl.models.speech_lm.SpeechLM`)
    keep them on disk beside the features, for every later SFT epoch, rollout and evaluation."""

    kind = "whisper"
    stack = 4

    def __init__(self, out_dim: int, encoder: str = "whisper-tiny.en", freeze: bool = True, lora_rank: int = 0):
        super().__init__()
        from transformers import WhisperFeatureExtractor, WhisperModel

        from speechrl.models.hub import resolve
        from speechrl.models.native.common import _default_whisper_extractor

        path = resolve(encoder)
        self.encoder = WhisperModel.from_pretrained(path, dtype=torch.float32).get_encoder()
        cfg = self.encoder.config
        try:
            self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        except OSError:  # a checkpoint without preprocessor_config.json
            self.extractor = _default_whisper_extractor(cfg.num_mel_bins, cfg.max_source_positions)
        if self.extractor.nb_max_frames != 2 * cfg.max_source_positions or self.extractor.feature_size != cfg.num_mel_bins:
            raise ValueError(f"{encoder}: the feature extractor's window ({self.extractor.feature_size} mels × "
                             f"{self.extractor.nb_max_frames} frames) does not fit the encoder")
        if lora_rank and not freeze:
            raise ValueError("lora_rank > 0 adapts a frozen encoder: use freeze=True")
        self.freeze, self.lora_rank = freeze, lora_rank
        if freeze:
            self.encoder.requires_grad_(False)
        if lora_rank:
            from peft import LoraConfig, inject_adapter_in_model

            lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                              target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
            self.encoder = inject_adapter_in_model(lora, self.encoder)
        self._digest = self._weights_digest() if freeze else None  # of the pretrained (frozen) weights
        d = cfg.d_model
        self.proj = nn.Sequential(nn.Linear(self.stack * d, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.train(self.training)

    @property
    def encoder_trains(self) -> bool:
        return not self.freeze or self.lora_rank > 0

    def train(self, mode: bool = True) -> "WhisperFrontEnd":
        super().train(mode)
        if not self.encoder_trains:
            self.encoder.eval()
        return self

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameters no pretraining gave (projector, LoRA): they take SFT's high ``new_lr``."""
        return [p for n, p in self.named_parameters() if p.requires_grad and (n.startswith("proj.") or "lora_" in n)]

    # -- features --------------------------------------------------------------------------------
    def featurizer(self):
        """A picklable waveform → feature-dict function (features are computed on a process pool)."""
        from functools import partial

        from speechrl.models.native.common import whisper_mel_features

        return partial(whisper_mel_features, self.extractor)

    def featurize(self, wav: np.ndarray) -> dict[str, np.ndarray]:
        """:func:`~speechrl.models.native.common.whisper_mel_features` with this encoder's extractor."""
        return self.featurizer()(wav)

    def collate(self, feats: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """``mel`` [B, n_mels, window] + ``length`` [B] (mel frames of audio); with every clip's cached
        ``hidden`` (and a frozen encoder) ``hidden`` [B, frames, d] instead of ``mel``."""
        from speechrl.models.native.common import collate_mel

        length = torch.tensor([int(np.asarray(f["length"]).item()) for f in feats], dtype=torch.long)
        if not self.encoder_trains and all("hidden" in f for f in feats):
            rows = [torch.as_tensor(np.asarray(f["hidden"]), dtype=torch.float32) for f in feats]
            return {"hidden": nn.utils.rnn.pad_sequence(rows, batch_first=True), "length": length}
        return {"mel": collate_mel(feats)[0], "length": length}

    def audio_frames(self, length: torch.Tensor) -> torch.Tensor:
        """Encoder frames that cover audio (the encoder halves the 100 frames/s of the mel)."""
        return (length // 2).clamp(1, self.encoder.config.max_source_positions)

    def run_encoder(self, mel: torch.Tensor) -> torch.Tensor:
        """The encoder's output [B, window / 2, d] for full-window mels (no grad while frozen)."""
        with torch.set_grad_enabled(self.encoder_trains and torch.is_grad_enabled()):
            return self.encoder(mel.to(self.proj[0].weight.dtype)).last_hidden_state

    # -- the encoder-output cache ------------------------------------------------------------------
    def encoder_outputs(self, feats: list[dict[str, np.ndarray]]) -> torch.Tensor:
        """The frozen encoder's outputs for feature dicts, up to the longest clip's audio [B, frames, d]."""
        device = self.proj[0].weight.device
        length = torch.tensor([int(np.asarray(f["length"]).item()) for f in feats])
        from speechrl.models.native.common import collate_mel

        hidden = self.run_encoder(collate_mel(feats)[0].to(device))
        return hidden[:, : int(self.audio_frames(length).max())]

    def precompute(self, feats: list[dict[str, np.ndarray]], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
        """Copies of ``feats`` with ``hidden``: each clip's encoder outputs over its audio (float32,
        [frames, d]), which :meth:`forward` then uses instead of the encoder. Frozen encoders only."""
        if self.encoder_trains:
            raise ValueError("the encoder trains (freeze=False or LoRA): its outputs must not be cached")
        out = []
        with torch.no_grad():
            for i in range(0, len(feats), batch_size):
                chunk = feats[i: i + batch_size]
                hidden = self.encoder_outputs(chunk).float().cpu().numpy()
                frames = self.audio_frames(torch.tensor([int(np.asarray(f["length"]).item()) for f in chunk]))
                out += [{**f, "hidden": np.ascontiguousarray(h[:n])} for f, h, n in zip(chunk, hidden, frames.tolist())]
        return out

    @property
    def encoder_cache_key(self) -> str | None:
        """A file name for this frozen encoder's cached outputs (extractor settings + weights digest);
        ``None`` while the encoder trains."""
        if self.encoder_trains:
            return None
        fe = self.extractor
        return f"whisper-{fe.feature_size}x{fe.nb_max_frames}-encoder-{self._digest[:10]}"

    def _weights_digest(self) -> str:
        from speechrl.checkpoint import weights_digest

        return weights_digest(self.encoder)

    # -- forward and saved state -------------------------------------------------------------------
    def forward(self, length: torch.Tensor, mel: torch.Tensor | None = None, hidden: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.audio_frames(length)
        n = int(frames.max())
        x = (hidden if hidden is not None else self.run_encoder(mel))[:, :n].to(self.proj[0].weight.dtype)
        keep = torch.arange(n, device=x.device)[None] < frames[:, None].to(x.device)
        x = x * keep[..., None]  # frames past a clip's audio: zero, whatever computed them
        k = self.stack
        x = nn.functional.pad(x, (0, 0, 0, -n % k)).reshape(x.shape[0], -(-n // k), k * x.shape[-1])
        mask = torch.arange(x.shape[1], device=x.device)[None] < (-(-frames // k))[:, None].to(x.device)
        return self.proj(x), mask.long()

    def saved_state(self) -> dict[str, torch.Tensor]:
        """What :class:`~speechrl.models.speech_lm.SpeechLM` saves: everything but a frozen encoder's
        pretrained weights (those reload from ``encoder``), plus their digest to check them on load."""
        state = self.state_dict()
        if self.freeze:
            state = {k: v for k, v in state.items() if not k.startswith("encoder.") or "lora_" in k}
            state["encoder_digest"] = torch.tensor(list(bytes.fromhex(self._digest)), dtype=torch.uint8)
        return state

    def load_saved_state(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        digest = tensors.pop("encoder_digest", None)
        if digest is not None and bytes(digest.tolist()).hex() != self._digest:
            raise ValueError("the saved front end was trained on other Whisper encoder weights than the "
                             "encoder its kwargs name now")
        missing, unexpected = self.load_state_dict(tensors, strict=False)
        missing = [k for k in missing if not (self.freeze and k.startswith("encoder.") and "lora_" not in k)]
        if missing or unexpected:
            raise ValueError(f"front end state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def make_front_end(kind: str, out_dim: int, **kw: Any) -> nn.Module:
    kinds = {"units": UnitFrontEnd, "mel": MelFrontEnd, "whisper": WhisperFrontEnd}
    if kind not in kinds:
        raise ValueError(f"unknown audio front end {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind](out_dim, **kw)
