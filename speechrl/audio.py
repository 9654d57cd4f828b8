"""Audio I/O: load anything soundfile reads, mix to mono, resample to 16 kHz, validate.

Every failure is an :class:`AudioError` that names the file and the reason. Batch loaders never
crash mid-run: they skip bad files and record them (``rejected.jsonl``) with the reason.

What :func:`load_audio` guarantees for a file it accepts: mono float32 at 16 kHz, every sample
finite and within [−1, 1] (a float file louder than full scale is rescaled, never clipped), between
``min_seconds`` (:data:`MIN_SECONDS`, 0.05 s) and ``max_seconds`` (:data:`MAX_SECONDS`, 600 s) long.
The length limit is checked from the header (``soundfile.info``) before any sample is decoded, so an
hours-long file is refused without reading it into memory. A WAV whose data chunk is shorter than its
header declares (a cut-off download or copy) is refused as truncated rather than loaded in part.
"""

from __future__ import annotations

import json
import os
import struct
import sys
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
"""Default longest accepted file (10 minutes): longer ones are refused from the header alone."""


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


def _sf_name(path: Path) -> str | bytes:
    """soundfile encodes a str name strictly (a name with non-UTF-8 bytes fails to open); on POSIX
    the raw bytes open any file."""
    return str(path) if sys.platform == "win32" else os.fsencode(path)


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF/WAVE header's ``data`` chunk declares, or None when unknown (not a RIFF WAV,
    or a streamed WAV whose size field was left 0 / 0xFFFFFFFF)."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        block_align = 0
        while len(head := f.read(8)) == 8:
            chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk == b"fmt ":
                fmt = f.read(size)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                f.seek(size % 2, 1)
            elif chunk == b"data":
                if block_align == 0 or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, 1)  # chunks are padded to even sizes
    return None


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, min_seconds: float = MIN_SECONDS,
               max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sr`` Hz, validated; raises :class:`AudioError`.

    A file longer than ``max_seconds`` is refused from its header, before decoding (see module doc).
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        info = sf.info(_sf_name(path))
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
    if info.format == "WAV" and (declared := _wav_declared_frames(path)) and declared > info.frames:
        raise AudioError(path, f"truncated: the header declares {declared} frames, the file holds "
                               f"{info.frames}")
    try:
        data, file_sr = sf.read(_sf_name(path), dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"truncated or corrupt audio ({err})") from None
    if data.shape[1] == 0:
        raise AudioError(path, "zero channels")
    wav = to_mono(data)
    if wav.size and not np.all(np.isfinite(wav)):
        raise AudioError(path, "contains NaN or infinite samples")
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > 1.0:  # a float file beyond full scale: rescale (as resample does), never clip
        wav = wav / peak
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


def _printable(text: str | Path) -> str:
    """``text`` as valid UTF-8: a file name's undecodable bytes (surrogate escapes) become ``\\xff``."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RejectLog:
    """Appends skipped inputs to ``<dir>/rejected.jsonl`` so nothing is dropped silently."""

    def __init__(self, out_dir: str | Path | None):
        self.path = Path(out_dir) / "rejected.jsonl" if out_dir is not None else None
        self.items: list[Rejected] = []

    def add(self, path: str | Path, reason: str, stage: str = "load") -> None:
        item = Rejected(_printable(path), _printable(reason), stage)
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

