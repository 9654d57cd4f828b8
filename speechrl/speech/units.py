"""Discrete speech units: audio (16 kHz mono float32) → :class:`Units`.

Three back ends behind one interface (:class:`UnitTokenizer`), built by :func:`make_unit_tokenizer`:

``"phoneme"`` (:class:`PhonemeUnitTokenizer`, default, offline, pretrained)
    hama 1.7.0's phoneme CTC model. Its frame-level argmax ids (50 frames/s, 320 samples a frame)
    are CTC-collapsed into one unit per emitted token, with a duration in frames. Unit ids are
    hama's decoder ids (``0..188``: IPA symbols, some specials) plus the word boundary
    :data:`WORD_BOUNDARY_ID` (``189``); the CTC blank (``190``) never appears in units.

    *Blank handling (the choice documented here):* a run of blank frames is **merged into the
    duration of the unit before it** — a phoneme lasts from its emission to the next emission, as
    in hama's own ``phoneme_spans``. Blank frames before the first emission (leading silence)
    become a leading word-boundary unit. Hence ``sum(units.durations) == number of frames``
    exactly, and a pause between words ends up in the duration of the word-boundary unit.

``"mfcc-kmeans"`` (:class:`MFCCKMeansTokenizer`, truly textless)
    13 MFCCs + deltas + delta-deltas (numpy/scipy, 25 ms window, 20 ms hop = 50 frames/s),
    standardized, then the nearest of K k-means centroids (k-means++ via ``scipy.cluster.vq``,
    deterministic for a seed). Fit with :meth:`~MFCCKMeansTokenizer.fit` on a list of wavs;
    :meth:`save` / :meth:`load` keep centroids (safetensors) and config (JSON).

``"hubert-kmeans"`` (:class:`HubertKMeansTokenizer`, for users with weights)
    Hidden states of one layer of a Hugging Face ``HubertModel`` (TWIST: layer 11, 500 clusters),
    clustered the same way. Frame rate from the conv strides (320 → 50 Hz).

Frame-level back ends return one unit per frame (durations all 1); :meth:`UnitTokenizer.dedup`
(run-length: collapse repeats, sum durations) gives the deduplicated sequence a unit LM is trained
on (TWIST removes duplicates); the durations are what a TTS/vocoder needs.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from speechrl.audio import SAMPLE_RATE, resample

__all__ = [
    "Units",
    "UnitTokenizer",
    "PhonemeUnitTokenizer",
    "MFCCKMeansTokenizer",
    "HubertKMeansTokenizer",
    "make_unit_tokenizer",
    "dedup",
    "ctc_frames_to_units",
    "mfcc_features",
    "kmeans_fit",
    "hama_tokens",
    "UNIT_TOKENIZERS",
    "WORD_BOUNDARY_ID",
    "BLANK_ID",
    "WORD_BOUNDARY",
]

# ---------------------------------------------------------------------------------------------
# Units


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


def _as_wav(wav: np.ndarray, sr: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------
# hama phoneme units

_HAMA_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def hama_tokens() -> tuple[str, ...]:
    """hama's ASR output symbols indexed by id: decoder vocabulary + ``<wb>`` + ``<blank>``."""
    from hama import Vocabulary

    return tuple(Vocabulary.load().decoder) + ("<wb>", "<blank>")


WORD_BOUNDARY_ID = 189  # hama 1.7.0: len(decoder vocabulary); checked against the model on load
BLANK_ID = 190
WORD_BOUNDARY = "|"  # what :meth:`PhonemeUnitTokenizer.ipa` shows for a word boundary


@functools.lru_cache(maxsize=1)
def _hama_asr():
    """The hama ASR model, loaded once per process."""
    from hama import ASRModel

    model = ASRModel()
    toks = hama_tokens()
    if model.blank_id != BLANK_ID or toks[WORD_BOUNDARY_ID] != "<wb>" or len(toks) != BLANK_ID + 1:
        raise RuntimeError(
            f"unexpected hama vocabulary (blank id {model.blank_id}, {len(toks)} tokens); "
            "speechrl expects hama 1.7.0 (blank=190, word boundary=189)")
    return model


def ctc_frames_to_units(frame_ids: Sequence[int], blank_id: int = BLANK_ID,
                        boundary_id: int = WORD_BOUNDARY_ID, frame_rate: float = 50.0,
                        kind: str = "phoneme") -> Units:
    """CTC frame ids → one unit per emission, blank frames merged into the preceding unit.

    A repeated id without a blank in between is one emission (CTC collapse). Leading blank frames
    become a leading word-boundary unit, so the durations sum to ``len(frame_ids)``. All-blank
    input gives a single word-boundary unit (silence).
    """
    ids: list[int] = []
    durs: list[int] = []
    lead = 0
    prev = None
    for t in frame_ids:
        t = int(t)
        if t == blank_id:
            if ids:
                durs[-1] += 1
            else:
                lead += 1
        elif t == prev:
            durs[-1] += 1
        else:
            ids.append(t)
            durs.append(1)
        prev = t
    if lead:
        if ids and ids[0] == boundary_id:
            durs[0] += lead
        else:
            ids.insert(0, boundary_id)
            durs.insert(0, lead)
    return Units(ids, durs, kind, frame_rate)


class PhonemeUnitTokenizer(UnitTokenizer):
    """Phoneme units from hama's frame-level CTC ids (pretrained, offline, 50 frames/s).

    ``encode`` returns CTC-collapsed units with durations (see the module docstring for blank
    handling); the word boundary (id 189) is kept as a unit so prompts can be cut at word ends.
    """

    name = "phoneme"
    frame_rate = 50.0

    def __init__(self) -> None:
        self._toks = hama_tokens()

    @property
    def vocab_size(self) -> int:
        return BLANK_ID  # ids 0..189; the blank (190) never appears in units

    @property
    def model(self):
        return _hama_asr()

    def frame_ids(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> list[int]:
        """Raw argmax CTC ids, one per 20 ms frame (blank = 190 included)."""
        wav = _as_wav(wav, sr)
        model = _hama_asr()
        with _HAMA_LOCK:  # one native session per process; keep calls serial
            res = model.transcribe_waveform(wav, SAMPLE_RATE)
        return [int(t) for t in res.frame_token_ids]

    def encode(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Units:
        return ctc_frames_to_units(self.frame_ids(wav, sr), frame_rate=self.frame_rate, kind=self.name)

    def ipa(self, units: Units | Sequence[int]) -> list[str]:
        """IPA symbol of each unit (hama's vocabulary); word boundaries shown as ``"|"``."""
        ids = units.ids if isinstance(units, Units) else list(units)
        out = []
        for i in ids:
            if i == WORD_BOUNDARY_ID:
                out.append(WORD_BOUNDARY)
            elif 0 <= i < len(self._toks):
                out.append(self._toks[i])
            else:
                raise ValueError(f"unit id {i} outside the phoneme vocabulary (0..{BLANK_ID - 1})")
        return out

    def ipa_text(self, units: Units | Sequence[int]) -> str:
        """Words of space-separated IPA symbols joined by ``" | "`` (like hama's word_phoneme_text)."""
        words: list[list[str]] = [[]]
        for s in self.ipa(units):
            if s == WORD_BOUNDARY:
                if words[-1]:
                    words.append([])
            else:
                words[-1].append(s)
        return " | ".join(" ".join(w) for w in words if w)

    def from_ipa(self, symbols: Sequence[str], durations: Sequence[int] | None = None) -> Units:
        """Units from hama IPA symbols (``"|"``, ``" "`` or ``"<wb>"`` for a word boundary)."""
        index = {t: i for i, t in enumerate(self._toks)}
        ids = []
        for s in symbols:
            if s in (WORD_BOUNDARY, " ", "<wb>"):
                ids.append(WORD_BOUNDARY_ID)
            elif s in index and index[s] != BLANK_ID:
                ids.append(index[s])
            else:
                raise ValueError(f"{s!r} is not a hama phoneme symbol")
        return Units(ids, list(durations) if durations is not None else None, self.name, self.frame_rate)


# ---------------------------------------------------------------------------------------------
# Features + k-means


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def _mel_filterbank(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_fft//2+1, n_mels)."""
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    return fb


def _deltas(x: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over ±width frames (edge-padded), x: (T, D)."""
    if x.shape[0] == 0:
        return x.copy()
    pad = np.pad(x, ((width, width), (0, 0)), mode="edge")
    denom = 2.0 * sum(n * n for n in range(1, width + 1))
    t = x.shape[0]
    out = np.zeros_like(x)
    for n in range(1, width + 1):
        out += n * (pad[width + n:width + n + t] - pad[width - n:width - n + t])
    return out / denom


def mfcc_features(wav: np.ndarray, sr: int = SAMPLE_RATE, n_mfcc: int = 13, n_mels: int = 40,
                  win_length: int = 400, hop_length: int = 320, n_fft: int = 512,
                  fmin: float = 20.0, fmax: float | None = None, deltas: bool = True,
                  cmn: bool = True) -> np.ndarray:
    """MFCC (+ delta, delta-delta) features, shape ``(frames, n_mfcc * 3)``; 50 frames/s at 16 kHz.

    Centered frames (``1 + len // hop`` of them), pre-emphasis 0.97, Hamming window, power
    spectrum → log mel (HTK mel) → DCT-II (ortho). ``cmn``: subtract the utterance mean of the
    cepstra (channel normalization) before the deltas.
    """
    from scipy.fft import dct, rfft

    x = _as_wav(wav, sr).astype(np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    half = n_fft // 2
    x = np.pad(x, (half, half), mode="reflect" if x.size > half else "constant")
    n_frames = 1 + (x.size - n_fft) // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
    frames = x[idx]
    window = np.zeros(n_fft)
    off = (n_fft - win_length) // 2
    window[off:off + win_length] = np.hamming(win_length)
    power = np.abs(rfft(frames * window, axis=1)) ** 2
    fb = _mel_filterbank(n_mels, n_fft, SAMPLE_RATE, fmin, fmax or SAMPLE_RATE / 2.0)
    logmel = np.log(power @ fb + 1e-10)
    cep = dct(logmel, type=2, axis=1, norm="ortho")[:, :n_mfcc]
    if cmn:
        cep = cep - cep.mean(axis=0, keepdims=True)
    feats = [cep]
    if deltas:
        d1 = _deltas(cep)
        feats += [d1, _deltas(d1)]
    return np.concatenate(feats, axis=1).astype(np.float32)


def kmeans_fit(x: np.ndarray, k: int, seed: int = 0, iters: int = 30) -> np.ndarray:
    """k-means++ initialisation + Lloyd iterations (``scipy.cluster.vq.kmeans2``); deterministic
    for a seed. Returns float32 centroids ``(k, dim)``."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < k:
        raise ValueError(f"need at least k={k} feature frames to fit k-means, got {x.shape[0]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "One of the clusters is empty": kept at its old centroid
        centroids, _ = kmeans2(x, k, iter=iters, minit="++", seed=np.random.default_rng(seed))
    return centroids.astype(np.float32)


def _assign(feats: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared Euclidean) for each row of feats."""
    f = feats.astype(np.float32, copy=False)
    d = (f * f).sum(1, keepdims=True) - 2.0 * f @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.argmin(d, axis=1)


class _KMeansTokenizer(UnitTokenizer):
    """Frame features → nearest k-means centroid. Subclasses define :meth:`features` and config."""

    default_k = 100
    _config_keys: tuple[str, ...] = ()

    def __init__(self, k: int | None = None, seed: int = 0) -> None:
        self.k = int(k or self.default_k)
        self.seed = int(seed)
        self.centroids: np.ndarray | None = None  # (k, dim) in standardized feature space
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @abstractmethod
    def features(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """(frames, dim) float32 features."""

    @property
    def vocab_size(self) -> int:
        return self.k

    @property
    def is_fitted(self) -> bool:
        return self.centroids is not None

    def fit(self, wavs: Iterable[np.ndarray], k: int | None = None, seed: int | None = None,
            sr: int = SAMPLE_RATE, max_frames: int = 200_000, frame_fraction: float = 1.0,
            iters: int = 30) -> "_KMeansTokenizer":
        """Fit k-means on the frames of ``wavs``; deterministic for a seed.

        ``frame_fraction`` keeps a random share of each utterance's frames as they are computed
        (bounds memory on big corpora); the pool is then subsampled to ``max_frames``. Features
        are standardized per dimension (mean/std of the pooled frames) before clustering."""
        if k is not None:
            self.k = int(k)
        if seed is not None:
            self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        feats = []
        for w in wavs:
            f = self.features(w, sr).astype(np.float32, copy=False)
            if frame_fraction < 1.0:
                f = f[rng.random(f.shape[0]) < frame_fraction]
            feats.append(f)
        if not feats:
            raise ValueError("fit() needs at least one wav")
        x = np.concatenate(feats, axis=0)
        if x.shape[0] > max_frames:
            x = x[np.sort(rng.choice(x.shape[0], max_frames, replace=False))]
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        std[std < 1e-8] = 1.0
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.centroids = kmeans_fit((x - self.mean) / self.std, self.k, seed=self.seed, iters=iters)
        return self

    def encode(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Units:
        if self.centroids is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(wavs) or load(dir)")
        f = (self.features(wav, sr) - self.mean) / self.std
        ids = _assign(f, self.centroids).tolist()
        return Units(ids, [1] * len(ids), self.name, self.frame_rate)

    # -- persistence -----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"name": self.name, "k": self.k, "seed": self.seed, "frame_rate": self.frame_rate}
        cfg.update({key: getattr(self, key) for key in self._config_keys})
        return cfg

    def save(self, directory: str | Path) -> Path:
        """Write ``centroids.safetensors`` (centroids, mean, std) and ``config.json``."""
        from safetensors.numpy import save_file

        if self.centroids is None:
            raise RuntimeError("nothing to save: the tokenizer is not fitted")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"centroids": np.ascontiguousarray(self.centroids),
                   "mean": np.ascontiguousarray(self.mean), "std": np.ascontiguousarray(self.std)},
                  str(d / "centroids.safetensors"))
        (d / "config.json").write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "_KMeansTokenizer":
        """Rebuild a fitted tokenizer saved by :meth:`save` (``overrides`` replace config keys)."""
        from safetensors.numpy import load_file

        d = Path(directory)
        cfg_path, w_path = d / "config.json", d / "centroids.safetensors"
        if not cfg_path.is_file() or not w_path.is_file():
            raise FileNotFoundError(f"{d}: expected config.json and centroids.safetensors")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("name") != cls.name:
            raise ValueError(f"{d} holds a {cfg.get('name')!r} tokenizer, not {cls.name!r}")
        cfg.update(overrides)
        kw = {key: cfg[key] for key in cls._config_keys if key in cfg}
        kw.update({key: v for key, v in overrides.items() if key not in ("k", "seed", "name", "frame_rate")})
        tok = cls(k=cfg["k"], seed=cfg.get("seed", 0), **kw)
        w = load_file(str(w_path))
        tok.centroids, tok.mean, tok.std = w["centroids"], w["mean"], w["std"]
        if tok.centroids.shape[0] != tok.k:
            raise ValueError(f"{d}: {tok.centroids.shape[0]} centroids but k={tok.k}")
        return tok


class MFCCKMeansTokenizer(_KMeansTokenizer):
    """Truly textless units: MFCC+Δ+ΔΔ (39 dims, 50 frames/s) → k-means (K=100 by default)."""

    name = "mfcc-kmeans"
    frame_rate = 50.0
    default_k = 100
    _config_keys = ("n_mfcc", "n_mels", "cmn")

    def __init__(self, k: int | None = None, seed: int = 0, n_mfcc: int = 13, n_mels: int = 40,
                 cmn: bool = True) -> None:
        super().__init__(k, seed)
        self.n_mfcc, self.n_mels, self.cmn = int(n_mfcc), int(n_mels), bool(cmn)

    def features(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        return mfcc_features(wav, sr, n_mfcc=self.n_mfcc, n_mels=self.n_mels, cmn=self.cmn)


DEFAULT_HUBERT = "facebook/hubert-base-ls960"  # TWIST used mHuBERT-25Hz (layer 11, 500 units)


class HubertKMeansTokenizer(_KMeansTokenizer):
    """HuBERT layer-``layer`` hidden states → k-means (K=500 by default, as TWIST).

    ``model``: hub id or local folder of a transformers ``HubertModel`` (safetensors weights).
    The feature extractor comes from the same folder when it has one, else a default
    ``Wav2Vec2FeatureExtractor`` (normalizing only if the config uses layer-norm features).
    """

    name = "hubert-kmeans"
    default_k = 500
    _config_keys = ("model_path", "layer")

    def __init__(self, k: int | None = None, seed: int = 0, model_path: str | Path = DEFAULT_HUBERT,
                 layer: int = 11, device: str = "cpu") -> None:
        super().__init__(k, seed)
        self.model_path = str(model_path)
        self.layer = int(layer)
        self.device = device
        self._model = None
        self._fe = None
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from transformers import HubertModel, Wav2Vec2FeatureExtractor

                    model = HubertModel.from_pretrained(self.model_path, use_safetensors=True)
                    model.eval().to(self.device)
                    n_layers = model.config.num_hidden_layers
                    if not 0 <= self.layer <= n_layers:
                        raise ValueError(f"layer {self.layer} out of range: {self.model_path} has "
                                         f"{n_layers} layers (0 = pre-transformer features)")
                    try:
                        fe = Wav2Vec2FeatureExtractor.from_pretrained(self.model_path)
                    except (OSError, ValueError):
                        fe = Wav2Vec2FeatureExtractor(
                            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                            do_normalize=getattr(model.config, "feat_extract_norm", "group") == "layer",
                            return_attention_mask=False)
                    self._fe, self._model = fe, model
        return self._model, self._fe

    @property
    def frame_rate(self) -> float:  # type: ignore[override]
        model, _ = self._load()
        return SAMPLE_RATE / float(math.prod(model.config.conv_stride))

    def features(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        import torch

        model, fe = self._load()
        wav = _as_wav(wav, sr)
        inputs = fe(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model(inputs["input_values"].to(self.device), output_hidden_states=True)
        return out.hidden_states[self.layer][0].float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Factory

UNIT_TOKENIZERS: dict[str, type[UnitTokenizer]] = {
    "phoneme": PhonemeUnitTokenizer,
    "mfcc-kmeans": MFCCKMeansTokenizer,
    "hubert-kmeans": HubertKMeansTokenizer,
}


def make_unit_tokenizer(name: str = "phoneme", path: str | Path | None = None, **kw: Any) -> UnitTokenizer:
    """Build a unit tokenizer by name. ``path``: a folder written by ``save()`` to load a fitted
    k-means tokenizer from; other keywords go to the constructor."""
    if name not in UNIT_TOKENIZERS:
        raise ValueError(f"unknown unit tokenizer {name!r}; allowed: {', '.join(UNIT_TOKENIZERS)}")
    cls = UNIT_TOKENIZERS[name]
    if path is not None:
        if not issubclass(cls, _KMeansTokenizer):
            raise ValueError(f"unit tokenizer {name!r} has nothing to load from {path}")
        return cls.load(path, **kw)
    return cls(**kw)
