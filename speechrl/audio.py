"""Audio I/O: load anything soundfile reads, mix to mono, resample to 16 kHz, validate.

Every failure is an :class:`AudioError` that names the file and the reason. Batch loaders never
crash mid-run: they skip bad files and record them (``rejected.jsonl``) with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.05
MAX_SECONDS = 600.0


class AudioError(ValueError):
    """A file that cannot be used as speech audio. ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def resample(wav: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a mono float signal; rescaled rather than clipped when it overshoots."""
    wav = np.asarray(wav, dtype=np.float32)
    if sr_in == sr_out or wav.size == 0:
        return wav
    ratio = Fraction(sr_out, sr_in).limit_denominator(1000)
    out = resample_poly(wav, ratio.numerator, ratio.denominator).astype(np.float32)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:  # the filter overshoots near full scale (Piper/eSpeak output): rescale, never clip
        out *= 0.99 / peak
    return out


def to_mono(wav: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) → (frames,) float32 by averaging the channels."""
    wav = np.asarray(wav, dtype=np.float32)
    return wav if wav.ndim == 1 else wav.mean(axis=1)


def validate(wav: np.ndarray, sr: int, path: str | Path = "<array>",
             min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Raise :class:`AudioError` unless ``wav`` is a finite, non-silent-empty mono signal of sane length."""
    if wav.ndim != 1:
        raise AudioError(path, f"expected mono audio, got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(path, "no samples")
    if not np.all(np.isfinite(wav)):
        raise AudioError(path, "contains NaN or infinite samples")
    seconds = wav.size / sr
    if seconds < min_seconds:
        raise AudioError(path, f"too short: {seconds:.3f} s < {min_seconds} s")
    if seconds > max_seconds:
        raise AudioError(path, f"too long: {seconds:.1f} s > {max_seconds} s")
    return wav


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, min_seconds: float = MIN_SECONDS,
               max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sr`` Hz, validated; raises :class:`AudioError`."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioError(path, f"not a readable audio file ({err})") from None
    if info.channels < 1:
        raise AudioError(path, "zero channels")
    if info.frames <= 0:
        raise AudioError(path, "no samples")
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate}")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:  # checked before decoding: hours of audio never reach memory
        raise AudioError(path, f"too long: {seconds:.1f} s > {max_seconds} s")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"truncated or corrupt audio ({err})") from None
    if data.shape[1] == 0:
        raise AudioError(path, "zero channels")
    wav = to_mono(data)
    if wav.size and not np.all(np.isfinite(wav)):
        raise AudioError(path, "contains NaN or infinite samples")
    return validate(resample(wav, file_sr, sr), sr, path, min_seconds, max_seconds)


def save_audio(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM WAV (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sr, subtype="PCM_16")
    return path


def duration(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    return round(wav.size / sr, 3)


@dataclass
class Rejected:
    """One input a batch job skipped, and why."""

    path: str
    reason: str
    stage: str = "load"


class RejectLog:
    """Appends skipped inputs to ``<dir>/rejected.jsonl`` so nothing is dropped silently."""

    def __init__(self, out_dir: str | Path | None):
        self.path = Path(out_dir) / "rejected.jsonl" if out_dir is not None else None
        self.items: list[Rejected] = []

    def add(self, path: str | Path, reason: str, stage: str = "load") -> None:
        item = Rejected(str(path), reason, stage)
        self.items.append(item)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(item.__dict__, ensure_ascii=False) + "\n")

    def __len__(self) -> int:
        return len(self.items)


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def iter_audio(paths: Iterable[str | Path], rejects: RejectLog, sr: int = SAMPLE_RATE,
               **limits: float) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, wav)`` for every loadable file; record the others in ``rejects`` and go on."""
    for p in paths:
        try:
            yield Path(p), load_audio(p, sr, **limits)
        except AudioError as err:
            rejects.add(err.path, err.reason)


def audio_files(folder: str | Path) -> list[Path]:
    """Files under ``folder`` (recursively) that look like audio by name, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)

