"""Fingerprints of stage outputs: short content hashes that two runs compare stage by stage.

Each pipeline writes ``fingerprints`` into its ``summary.json``: ``{stage: hash}`` for the corpus (its
manifest rows and audio bytes), the unit features, the trained weights of every stage, a round's
candidates and pairs, and the continuations each evaluated system sampled. Two runs of the same command
that agree on every fingerprint computed the same thing; the first key that differs names the stage
where they parted. The hashes cover content only (never absolute paths, times or file layout), so runs
into different folders and caches compare equal.

``speechrl.fingerprint.compare(a, b)`` lists the keys on which two summaries differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

DIGITS = 16  # hex digits kept: 64 bits, no collision between the handful of stages a run compares


def _digest(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(len(chunk).to_bytes(8, "little"))  # framed: ("ab", "c") and ("a", "bc") differ
        h.update(chunk)
    return h.hexdigest()[:DIGITS]


def of_json(value: Any) -> str:
    """Hash of a JSON-serialisable value (keys sorted; floats at full precision)."""
    return _digest([json.dumps(value, sort_keys=True, ensure_ascii=False).encode()])


def of_arrays(arrays: Mapping[str, Any]) -> str:
    """Hash of named arrays or tensors: each name, dtype, shape and bytes, in name order."""
    chunks = []
    for name in sorted(arrays):
        a = arrays[name]
        a = a.detach().cpu().contiguous().numpy() if hasattr(a, "detach") else np.ascontiguousarray(a)
        chunks += [name.encode(), str(a.dtype).encode(), json.dumps(list(a.shape)).encode(), a.tobytes()]
    return _digest(chunks)


def of_weights(path: str | Path) -> str:
    """Hash of a safetensors file's tensors (not of its bytes: the header's layout does not count)."""
    from safetensors.torch import load_file

    return of_arrays(load_file(str(path)))


def of_features(feats: Mapping[str, Mapping[str, Any]]) -> str:
    """Hash of cached features ``{utterance id: {name: array}}``."""
    return of_arrays({f"{uid}/{name}": arr for uid, f in feats.items() for name, arr in f.items()})


def of_corpus(rows: Iterable[Mapping[str, Any]]) -> str:
    """Hash of manifest rows with their audio: every column but the absolute ``audio`` path, and the
    audio file's bytes."""
    chunks = []
    for row in sorted(rows, key=lambda r: r["id"]):
        chunks.append(json.dumps({k: v for k, v in row.items() if k != "audio"}, sort_keys=True).encode())
        chunks.append(Path(row["audio"]).read_bytes())
    return _digest(chunks)


def of_jsonl(path: str | Path, drop: tuple[str, ...] = ()) -> str:
    """Hash of a JSON Lines file's rows, without the top-level keys ``drop`` (e.g. paths)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return of_json([{k: v for k, v in r.items() if k not in drop} for r in rows])


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The fingerprint keys on which two ``summary.json`` dicts (or two fingerprint dicts) differ, in
    ``a``'s stage order, keys only one has included."""
    fa, fb = a.get("fingerprints", a), b.get("fingerprints", b)
    return [k for k in [*fa, *(k for k in fb if k not in fa)] if fa.get(k) != fb.get(k)]


def of_stages(out: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{stage: hash of its chosen weights}`` for each stage folder of ``out`` that has ``best/``."""
    paths = {name: Path(out) / name / "best" / "model.safetensors" for name in names}
    return {name: of_weights(p) for name, p in paths.items() if p.is_file()}
