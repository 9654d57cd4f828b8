"""Audio features computed once per utterance and cached next to the corpus.

``features(corpus_dir, rows, kind)`` returns ``{utterance id: {name: array}}`` for a front end kind
(``units``: hama phoneme units with durations; ``mel``: log-mel), or for any policy's own features:
``features(corpus_dir, rows, policy.feature_kind, featurize=policy.featurizer())`` (a picklable
waveform → arrays function, e.g. a native policy's feature extractor; ``feature_kind`` names the
extractor's settings, so two extractors never share a cache file). The cache is one safetensors file
per kind (``<corpus>/features/<kind>.safetensors``); only utterances missing from it are computed,
on a process pool with a progress bar (a row's ``raw_sample_rate``, set by the data sources for
headerless audio, is the rate its file is read at). An utterance whose audio cannot be loaded is recorded in
``<corpus>/features/rejected.jsonl`` and left out — callers drop examples without features.

Under ``accelerate launch`` every rank computes its share of the missing utterances, the results and
the failures are gathered to every rank (so all ranks hold the same features and agree on what was
skipped, whichever rank met the bad file — no rank waits forever on another), each rank logs the
skips, and only the main process writes the cache. Every rank must call ``features`` alike.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from speechrl.audio import AudioError, RejectLog, load_audio
from speechrl.parallel import all_gather_list, pool_map, process_state

KINDS = ("units", "mel", "whisper")
log = logging.getLogger(__name__)


def featurize_wav(kind: str, wav: np.ndarray) -> dict[str, np.ndarray]:
    """One 16 kHz waveform → the arrays the ``kind`` front end consumes."""
    if kind == "units":
        from speechrl.models.frontends import UnitFrontEnd

        return UnitFrontEnd.featurize(_unit_tokenizer().encode(wav))
    if kind == "mel":
        return {"mel": _mel_front_end().featurize(wav)["mel"]}
    if kind == "whisper":  # the default tiny.en extractor: 80 bins, 30-s window
        from speechrl.models.native.common import whisper_mel_features

        return whisper_mel_features(_whisper_extractor(), wav)
    raise ValueError(f"no cached features for front end {kind!r}; choose one of {list(KINDS)}")


_CACHE: dict[str, Any] = {}


def _unit_tokenizer():
    if "units" not in _CACHE:
        from speechrl.speech.units import make_unit_tokenizer

        _CACHE["units"] = make_unit_tokenizer("phoneme")
    return _CACHE["units"]


def _mel_front_end():
    if "mel" not in _CACHE:
        from speechrl.models.frontends import MelFrontEnd

        _CACHE["mel"] = MelFrontEnd(out_dim=8)  # only its feature extractor is used
    return _CACHE["mel"]


def _whisper_extractor():
    if "whisper" not in _CACHE:
        from speechrl.models.native.common import _default_whisper_extractor

        _CACHE["whisper"] = _default_whisper_extractor(80, 1500)
    return _CACHE["whisper"]


def _job(args: tuple[Any, str, str, int | None]) -> tuple[str, dict[str, np.ndarray] | None, str | None]:
    kind, uid, path, raw_sample_rate = args  # kind: a KINDS name, or a featurize function
    try:
        wav = load_audio(path, raw_sample_rate=raw_sample_rate)
        return uid, featurize_wav(kind, wav) if isinstance(kind, str) else kind(wav), None
    except AudioError as err:
        return uid, None, err.reason
    except Exception as err:  # a featurizer failure on one file must not stop the batch
        return uid, None, f"{type(err).__name__}: {err}"


def features(corpus_dir: str | Path, rows: list[dict[str, Any]], kind: str, workers: int = 2,
             featurize: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Cached features for ``rows`` (manifest rows with ``id`` and absolute ``audio``): a front end
    ``kind`` of :data:`KINDS`, or ``featurize``'s arrays cached under the name ``kind``."""
    if featurize is None and kind not in KINDS:
        raise ValueError(f"no cached features for front end {kind!r}; choose one of {list(KINDS)}")
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"feature kind {kind!r} is not a file name")
    folder = Path(corpus_dir) / "features"
    path = folder / f"{kind}.safetensors"
    flat = load_file(str(path)) if path.is_file() else {}
    have = {k.rsplit("/", 1)[0] for k in flat}
    job = featurize if featurize is not None else kind
    todo = [(job, r["id"], r["audio"], r.get("raw_sample_rate")) for r in rows if r["id"] not in have]
    state = process_state()
    if state.num_processes > 1:  # what any rank misses is computed for all (same list on every rank),
        audio = {r["id"]: (r["audio"], r.get("raw_sample_rate")) for r in rows}  # each rank reads its own copy
        missing = all_gather_list([t[1] for t in todo], state)
        todo = [(job, uid, *audio[uid]) for uid in dict.fromkeys(missing)]
    if featurize is not None or kind == "whisper":
        # Whisper-style extractors compute with torch, which a forked worker cannot use once this process
        # has started OpenMP threads (it deadlocks); they are fast (≈250 clips/s), so they run here
        workers = 1
    if todo:
        mine = todo[state.process_index::state.num_processes]
        done = list(tqdm(pool_map(_job, mine, workers, chunksize=8), total=len(mine), desc=f"features:{kind}",
                         unit="utt", disable=not state.is_local_main_process))
        done = all_gather_list(done, state)
        failed = [(uid, error or "unknown error") for uid, feats, error in done if feats is None]
        for uid, feats, _ in done:
            for name, arr in (feats or {}).items():
                flat[f"{uid}/{name}"] = np.ascontiguousarray(arr)
        if failed:
            log.warning("rank %d: skipped %d utterance(s) without usable audio: %s", state.process_index,
                        len(failed), "; ".join(f"{u} ({e})" for u, e in failed[:5]))
        if state.is_main_process:
            rejects = RejectLog(folder)
            for uid, error in failed:
                rejects.add(uid, error, stage=f"features:{kind}")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file(flat, str(tmp))
            tmp.replace(path)
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in flat.items():
        uid, name = key.rsplit("/", 1)
        out.setdefault(uid, {})[name] = arr
    wanted = {r["id"] for r in rows}
    return {uid: f for uid, f in out.items() if uid in wanted}


def _read_wanted(path: Path, wanted: Any) -> dict[str, np.ndarray]:
    """The arrays of ``path`` named in ``wanted`` — only those read when the file has them all (a process
    that needs a few clips does not hold every clip's), else every array (to add the missing and save)."""
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="np") as f:
        if set(wanted) <= set(f.keys()):
            return {uid: f.get_tensor(uid) for uid in wanted}
    return load_file(str(path))


def cached_encodings(corpus_dir: str | Path, feats: dict[str, dict[str, np.ndarray]], policy: Any,
                     batch_size: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """``feats`` with each utterance's frozen audio-encoder output added as ``hidden`` (float16), computed
    once and cached beside the features (``<corpus>/features/<policy.encoder_cache_key>.safetensors``)
    so that SFT epochs, RL and every evaluation reuse it; ``feats`` unchanged when the policy's encoder
    trains (``encoder_cache_key`` None) or the policy has no such cache. The key hashes the encoder's
    weights: a changed encoder never reads stale outputs. float16 halves the memory (Whisper tiny.en:
    1.15 MB a clip); the policy reads cached and fresh outputs alike, so training, rollouts and
    evaluation all see the cached ones. Under ``accelerate launch`` the main process computes, the
    others then read the file."""
    key = getattr(policy, "encoder_cache_key", None)
    if key is None or not feats:
        return feats
    path = Path(corpus_dir) / "features" / f"{key}.safetensors"
    with process_state().main_process_first():
        cached = _read_wanted(path, feats)
        todo = [uid for uid in feats if uid not in cached]
        if todo:
            import torch

            state = process_state()
            with torch.no_grad():
                for i in tqdm(range(0, len(todo), batch_size), desc="encoder outputs", unit="batch",
                              disable=not state.is_local_main_process):
                    ids = todo[i: i + batch_size]
                    hidden = policy.encoder_outputs([feats[u] for u in ids]).float().cpu().numpy()
                    cached.update({u: np.ascontiguousarray(h.astype(np.float16)) for u, h in zip(ids, hidden)})
            if state.is_main_process:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                save_file(cached, str(tmp))
                tmp.replace(path)
    return {uid: {**f, "hidden": cached[uid]} for uid, f in feats.items()}
