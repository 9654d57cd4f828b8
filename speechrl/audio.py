"""Audio I/O: load anything soundfile reads, mix to mono, resample to 16 kHz, validate.

Every failure is an :class:`AudioError` that names the file and the reason. Batch loaders never
crash mid-run: they skip bad files and record them (``rejected.jsonl``) with the reason.

What :func:`load_audio` guarantees for a file it accepts: mono float32 at 16 kHz, every sample
finite and within [−1, 1] (a float file louder than full scale is rescaled, never clipped), between
``min_seconds`` (:data:`MIN_SECONDS`, 0.05 s) and ``max_seconds`` (:data:`MAX_SECONDS`, 600 s) long.
The length limit is checked from the header (``soundfile.info``) before any sample is decoded, so an
hours-long file is refused without reading it into memory. A WAV whose data chunk is shorter than its
header declares (a cut-off download or copy) is refused as truncated rather than loaded in part.

Headerless ``.raw`` / ``.pcm`` files (:data:`RAW_SUFFIXES`: 16-bit little-endian mono PCM) load when
their sample rate is given (``raw_sample_rate``; ``speechrl audio scan --sample-rate``); without it
they are refused with that reason, never guessed.

Reasons are worded for people where libsndfile's are cryptic: ``empty file (0 bytes)``, ``a
directory, not a file``, ``dangling symbolic link``, ``sample rate 0 in the header``; a reason never
repeats the path (the error and ``rejected.jsonl`` name it once, as text).
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


def _wav_fmt(path: Path) -> tuple[int | None, int | None, int, int | None] | None:
    """``(channels, sample rate, block align, declared data frames)`` from a RIFF/WAVE header, or None
    when it is not one. Channels and rate are None without a complete ``fmt`` chunk; declared frames
    are None when unknown (a streamed WAV whose size field was left 0 / 0xFFFFFFFF, no ``data`` chunk)."""
    with open(path, "rb") as f:
        riff = f.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        channels = rate = None
        block_align = 0
        while len(head := f.read(8)) == 8:
            chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk == b"fmt ":
                fmt = f.read(size)
                if len(fmt) >= 14:
                    channels, rate, _, block_align = struct.unpack("<HIIH", fmt[2:14])
                f.seek(size % 2, 1)
            elif chunk == b"data":
                known = block_align > 0 and size not in (0, 0xFFFFFFFF)
                return channels, rate, block_align, size // block_align if known else None
            else:
                f.seek(size + size % 2, 1)  # chunks are padded to even sizes
        return channels, rate, block_align, None


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF/WAVE header's ``data`` chunk declares, or None when unknown (see :func:`_wav_fmt`)."""
    fmt = _wav_fmt(path)
    return fmt[3] if fmt else None


RAW_SUFFIXES = frozenset({".raw", ".pcm"})
"""Headerless audio: read as :data:`RAW_SUBTYPE` mono at a sample rate the caller gives."""
RAW_SUBTYPE = "PCM_16"


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be an audio file — not there, a dangling link, a directory, not a regular
    file, unreadable, 0 bytes — or None when it is a readable, non-empty regular file."""
    path = Path(path)
    if not path.exists():
        return f"dangling symbolic link (to {os.readlink(path)})" if path.is_symlink() else "no such file"
    if path.is_dir():
        return "a directory, not a file"
    if not path.is_file():
        return "not a regular file (a pipe, socket or device)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


@dataclass(frozen=True)
class Header:
    """What a file's header says, before any sample is decoded."""

    frames: int
    samplerate: int
    channels: int
    format: str
    subtype: str


def _raw_args(path: Path, raw_sample_rate: int | None) -> dict:
    """soundfile's keyword arguments for a headerless file (empty for any other)."""
    if path.suffix.lower() not in RAW_SUFFIXES:
        return {}
    if not raw_sample_rate or raw_sample_rate <= 0:
        raise AudioError(path, "headerless raw audio: its sample rate is unknown (give it: --sample-rate, "
                               "raw_sample_rate)")
    return {"samplerate": int(raw_sample_rate), "channels": 1, "subtype": RAW_SUBTYPE, "endian": "LITTLE",
            "format": "RAW"}


def _unreadable(path: Path, err: Exception) -> str:
    """libsndfile's reason without its ``Error opening b'<path>':`` prefix (the path is named once, by
    the caller), or the header's own problem where libsndfile only says "SF_INFO struct incomplete"."""
    try:
        fmt = _wav_fmt(path)
    except OSError:
        fmt = None
    if fmt and fmt[0] == 0:
        return "zero channels in the header"
    if fmt and fmt[1] == 0:
        return "sample rate 0 in the header"
    detail = getattr(err, "error_string", None) or str(err).splitlines()[0] or type(err).__name__
    return f"not a readable audio file ({detail.strip()[:120]})"


def read_header(path: str | Path, raw_sample_rate: int | None = None) -> Header:
    """The header of an audio file (``raw_sample_rate``: that of a headerless ``.raw``/``.pcm`` file);
    raises :class:`AudioError` with the reason when ``path`` is no readable audio file. Checks nothing
    about the values (see :func:`load_audio`)."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise AudioError(path, problem)
    raw = _raw_args(path, raw_sample_rate)
    try:
        with sf.SoundFile(_sf_name(path), **raw) as f:
            return Header(f.frames, f.samplerate, f.channels, f.format, f.subtype)
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioError(path, _unreadable(path, err)) from None


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, min_seconds: float = MIN_SECONDS,
               max_seconds: float = MAX_SECONDS, raw_sample_rate: int | None = None) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sr`` Hz, validated; raises :class:`AudioError`.

    A file longer than ``max_seconds`` is refused from its header, before decoding (see module doc).
    ``raw_sample_rate``: the sample rate of a headerless ``.raw``/``.pcm`` file (ignored for others).
    """
    path = Path(path)
    info = read_header(path, raw_sample_rate)
    if info.channels < 1:
        raise AudioError(path, "zero channels")
    if info.samplerate <= 0:
        raise AudioError(path, f"sample rate {info.samplerate} in the header")
    if info.frames <= 0:
        raise AudioError(path, "no samples")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:  # checked before decoding: hours of audio never reach memory
        raise AudioError(path, f"too long: {seconds:.1f} s > {max_seconds} s")
    if info.format == "WAV" and (declared := _wav_declared_frames(path)) and declared > info.frames:
        raise AudioError(path, f"truncated: the header declares {declared} frames, the file holds "
                               f"{info.frames}")
    try:
        data, file_sr = sf.read(_sf_name(path), dtype="float32", always_2d=True, **_raw_args(path, raw_sample_rate))
    except Exception as err:
        detail = getattr(err, "error_string", None) or str(err).splitlines()[0]
        raise AudioError(path, f"truncated or corrupt audio ({detail})") from None
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


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus", ".sph", ".w64", ".caf"}
"""File names that say "audio" (headerless :data:`RAW_SUFFIXES` aside)."""


def iter_audio(paths: Iterable[str | Path], rejects: RejectLog, sr: int = SAMPLE_RATE,
               raw_sample_rate: int | None = None, **limits: float) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield ``(path, wav)`` for every loadable file; record the others in ``rejects`` and go on."""
    for p in paths:
        try:
            yield Path(p), load_audio(p, sr, raw_sample_rate=raw_sample_rate, **limits)
        except AudioError as err:
            rejects.add(err.path, err.reason)


def is_audio_name(path: str | Path) -> bool:
    """Whether ``path``'s extension is one of :data:`AUDIO_SUFFIXES` or :data:`RAW_SUFFIXES`."""
    suffix = Path(path).suffix.lower()
    return suffix in AUDIO_SUFFIXES or suffix in RAW_SUFFIXES


@dataclass
class FolderScan:
    """Every entry under a folder, sorted into ``audio`` (to load: audio-named entries of any kind, and
    entries that are neither folder nor regular file, such as dangling links), ``other`` (regular
    files with other names: their count by extension, ``""`` for none) and ``unreadable`` (folders
    that could not be listed, with the reason)."""

    audio: list[Path]
    other: dict[str, int]
    unreadable: list[tuple[Path, str]]


def scan_folder(folder: str | Path) -> FolderScan:
    """Walk ``folder`` (symbolic links to folders followed, each folder once) and sort every entry
    (:class:`FolderScan`); a missing folder, or a file, raises NotADirectoryError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{_printable(folder)}: {'no such folder' if not folder.exists() else 'not a folder'}")
    scan = FolderScan([], {}, [])
    seen: set[str] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:  # a second link to a folder already walked (or a link loop)
            scan.other["(folder already scanned)"] = scan.other.get("(folder already scanned)", 0) + 1
            continue
        seen.add(real)
        try:
            names = sorted(os.listdir(current))
        except OSError as err:
            scan.unreadable.append((current, f"folder not readable ({err.strerror})"))
            continue
        for name in names:
            path = current / name
            if path.is_dir() and not is_audio_name(path):
                stack.append(path)
            elif is_audio_name(path) or not path.is_file():
                scan.audio.append(path)
            else:
                scan.other[path.suffix.lower()] = scan.other.get(path.suffix.lower(), 0) + 1
    scan.audio.sort()
    scan.other = dict(sorted(scan.other.items()))
    return scan


def audio_files(folder: str | Path) -> list[Path]:
    """The entries under ``folder`` to load as audio (:func:`scan_folder`), sorted."""
    return scan_folder(folder).audio

