"""k-means unit tokenizers: frame features (MFCCs, or one HuBERT layer) → the nearest of K centroids, one
unit per frame; fitted, saved and loaded (centroids in safetensors, config in JSON)."""

from __future__ import annotations

import functools
import json
import math
import threading
import warnings
from abc import abstractmethod
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from speechrl.audio import SAMPLE_RATE
from speechrl.speech.units.base import Units, UnitTokenizer, mono_16k


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

    x = mono_16k(wav, sr).astype(np.float64)
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
        wav = mono_16k(wav, sr)
        inputs = fe(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model(inputs["input_values"].to(self.device), output_hidden_states=True)
        return out.hidden_states[self.layer][0].float().cpu().numpy()
