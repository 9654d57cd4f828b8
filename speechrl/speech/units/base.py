"""The :class:`Units` record (ids, durations in frames, kind, frame rate), run-length :func:`dedup`, and the
:class:`UnitTokenizer` interface every back end implements (:mod:`speechrl.speech.units`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from speechrl.audio import SAMPLE_RATE, resample


@dataclass
class Units:
    """A sequence of discrete speech units.

    ``ids``: unit ids in ``[0, vocab_size)``. ``durations``: frames per unit (same length as
    ``ids``), or ``None`` when unknown (e.g. units sampled from a unit LM). ``kind``: the
    tokenizer name that produced them (``"phoneme"``, ``"mfcc-kmeans"``, ...). ``frame_rate``:
    frames per second the durations count in.
    """

    ids: list[int]
    durations: list[int] | None = None
    kind: str = ""
    frame_rate: float = 50.0

    def __post_init__(self) -> None:
        self.ids = [int(i) for i in self.ids]
        if self.durations is not None:
            self.durations = [int(d) for d in self.durations]
            if len(self.durations) != len(self.ids):
                raise ValueError(f"{len(self.ids)} unit ids but {len(self.durations)} durations")
            if any(d < 1 for d in self.durations):
                raise ValueError("unit durations must be >= 1 frame")
        if self.frame_rate <= 0:
            raise ValueError(f"frame_rate must be > 0, got {self.frame_rate}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_frames(self) -> int | None:
        """Total frames covered (``None`` without durations)."""
        return None if self.durations is None else int(sum(self.durations))

    @property
    def seconds(self) -> float | None:
        """Duration in seconds implied by the durations (``None`` without durations)."""
        n = self.num_frames
        return None if n is None else n / self.frame_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Units":
        return cls(ids=list(d["ids"]), durations=d.get("durations"), kind=d.get("kind", ""),
                   frame_rate=float(d.get("frame_rate", 50.0)))


def dedup(units: Units) -> Units:
    """Run-length encode: collapse runs of equal ids; a run's duration is the sum of its frames.

    Units without durations count one frame each. Idempotent.
    """
    ids: list[int] = []
    durs: list[int] = []
    src_d = units.durations if units.durations is not None else [1] * len(units.ids)
    for i, d in zip(units.ids, src_d):
        if ids and ids[-1] == i:
            durs[-1] += d
        else:
            ids.append(i)
            durs.append(d)
    return Units(ids, durs, units.kind, units.frame_rate)


def mono_16k(wav: np.ndarray, sr: int) -> np.ndarray:
    """Validate and convert input audio to 16 kHz mono float32."""
    arr = np.asarray(wav)
    if arr.ndim == 2:  # (frames, channels)
        arr = arr.mean(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"expected mono audio (1-D array), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("empty audio")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError("audio contains NaN or infinite samples")
    if sr != SAMPLE_RATE:
        arr = resample(arr, sr, SAMPLE_RATE)
    return arr


class UnitTokenizer(ABC):
    """Audio (16 kHz mono float32) → :class:`Units`."""

    name: str = ""
    frame_rate: float = 50.0

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct unit ids: every id is in ``[0, vocab_size)``."""

    @abstractmethod
    def encode(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Units:
        """Units of one utterance (resampled to 16 kHz first when ``sr`` differs)."""

    def encode_batch(self, wavs: Iterable[np.ndarray], sr: int = SAMPLE_RATE) -> list[Units]:
        return [self.encode(w, sr) for w in wavs]

    def dedup(self, units: Units) -> Units:
        """Collapse repeated units, keeping per-unit durations in frames (see :func:`dedup`)."""
        return dedup(units)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"
