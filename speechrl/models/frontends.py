"""Audio front ends: audio features → embeddings in the LM's hidden size (encoder + projector).

Featurising (audio → features) is a data-preparation step whose results are cached on disk;
the front end turns a padded batch of features into embeddings. Three front ends:

* ``units``   — hama phoneme units with durations (pretrained phoneme recogniser, offline default):
  unit + duration embeddings → conv → projector.
* ``mel``     — 80-bin log-mel (transformers' ``WhisperFeatureExtractor``) → 2 strided convs
  (4× down, 25 frames/s) → small transformer → 2-frame stacking (12.5 frames/s) → projector.
  Trained here from scratch.
* ``whisper`` — the encoder of an HF Whisper checkpoint (frozen) → 4-frame stacking → projector.
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
    """A pretrained (frozen) HF Whisper encoder → 4-frame stacking (12.5 frames/s) → projector."""

    kind = "whisper"

    def __init__(self, out_dim: int, encoder_path: str, freeze: bool = True):
        super().__init__()
        from transformers import WhisperFeatureExtractor, WhisperModel

        whisper = WhisperModel.from_pretrained(encoder_path, use_safetensors=True)
        self.encoder = whisper.get_encoder()
        self.encoder_path = encoder_path
        if freeze:
            self.encoder.requires_grad_(False)
        self.extractor = WhisperFeatureExtractor.from_pretrained(encoder_path)
        d = self.encoder.config.d_model
        self.proj = nn.Sequential(nn.Linear(4 * d, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def featurize(self, wav: np.ndarray) -> dict[str, np.ndarray]:
        feats = self.extractor(wav, sampling_rate=16000, return_tensors="np")  # padded to the encoder's window
        frames = min(len(wav) // self.extractor.hop_length, feats["input_features"].shape[-1])
        return {"mel": feats["input_features"][0].astype(np.float32), "frames": np.asarray(frames)}

    def collate(self, feats: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        mel = torch.stack([torch.as_tensor(f["mel"]) for f in feats])
        enc_frames = [int(f["frames"]) // 2 for f in feats]  # the encoder halves the frame rate
        width = mel.shape[-1] // 2
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, n in enumerate(enc_frames):
            mask[i, : max(4, n)] = 1
        return {"mel": mel, "mask": mask}

    def forward(self, mel: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(mel).last_hidden_state  # [B, 1500, d] for 30-s windows
        t = x.shape[1] - x.shape[1] % 4
        x = x[:, :t].reshape(x.shape[0], t // 4, -1)
        return self.proj(x), mask[:, :t:4]


def make_front_end(kind: str, out_dim: int, **kw: Any) -> nn.Module:
    kinds = {"units": UnitFrontEnd, "mel": MelFrontEnd, "whisper": WhisperFrontEnd}
    if kind not in kinds:
        raise ValueError(f"unknown audio front end {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind](out_dim, **kw)
