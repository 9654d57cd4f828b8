"""Loaders for the real spoken minimal-pair sets: ZeroSpeech 2021 sWUGGY/sBLIMP and Spoken StoryCloze.

Each loader returns :class:`~speechrl.align.minimal_pairs.MinimalPair` objects (positive and negative
audio paths, kind, texts) — the same structure as the offline builders; give them units with
:func:`~speechrl.align.minimal_pairs.encode_pairs` and score them with
:func:`~speechrl.align.minimal_pairs.evaluate_minimal_pairs`.

**ZeroSpeech 2021** (``<root>/lexical/<split>/`` and ``<root>/syntactic/<split>/``, each holding the
``*.wav`` files and ``gold.csv``; a loader takes either the dataset root or that folder). Verified
against the challenge's own evaluation code (``zerospeech/zerospeech2021``: ``lexical.py``,
``syntactic.py``; ``zerospeech/benchmarks``: ``tasks/lm/lexical.py``, ``syntactic.py``), which reads
``gold.csv`` with a header row, indexed by ``filename`` (the wav's stem), and uses these columns:

* lexical (sWUGGY): ``filename, id, voice, frequency, word, phones, length, correct`` — ``correct``
  is 1 for the word and 0 for the non-word; a word and its non-word share ``id`` and ``voice``. When
  the non-words' ``word`` is empty the ``phones`` column stands for it (as the official code does).
* syntactic (sBLIMP): ``filename, id, voice, type, subtype, correct, transcription`` — the sentence
  column is ``transcription`` (the official code renames it to ``sentence`` only in its output);
  ``sentence`` is accepted as well. Pairs share ``type``, ``subtype``, ``id`` and ``voice`` (the
  official code averages over voices grouping by type, subtype and id).

Required here: ``filename, id, voice, correct`` and the text column (``word``; ``transcription`` or
``sentence``); others are optional. Pair ids are ``<id>/<voice>`` (sWUGGY) and
``<type>/<subtype>/<id>/<voice>`` (sBLIMP).

**Spoken StoryCloze** (sSC, tSC; slp-rl/SpokenStoryCloze, released as archives of wav files). The
repository does not document the file naming, so this is the *assumed* layout, taken from how
SlamKit (slp-rl/slamkit ``metric/modelling_metric.py``) reads the folders: one folder of
``<index>_<rest>.wav`` files, two per integer ``<index>``. The member whose stem ends in ``correct``
(``_correct``) is the positive and the one ending in ``incorrect`` the negative; when neither carries
such a label, the two files are taken in name order, first = positive (SlamKit's order).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from speechrl.align.minimal_pairs import MinimalPair

__all__ = ["load_swuggy", "load_sblimp", "load_spoken_storycloze", "read_gold"]

LEXICAL_REQUIRED = ("filename", "id", "voice", "word", "correct")
SYNTACTIC_REQUIRED = ("filename", "id", "voice", "type", "subtype", "correct")


def _split_folder(root: str | Path, task: str, split: str) -> Path:
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    root = Path(root)
    folder = root / task / split if (root / task / split).is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"no {task} folder: neither {root / task / split} nor {root} exists")
    if not (folder / "gold.csv").is_file():
        raise FileNotFoundError(f"{folder}: no gold.csv (expected the ZeroSpeech 2021 {task}/{split} layout: "
                                "*.wav files and gold.csv)")
    return folder


def read_gold(path: str | Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Rows of a ``gold.csv`` (header row); ``ValueError`` naming the missing columns or a bad row."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {columns}")
        rows = []
        for lineno, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if row.get("correct") not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: 'correct' must be 0 or 1, got {row.get('correct')!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _pairs_from_gold(folder: Path, rows: list[dict[str, str]], key_cols: tuple[str, ...], kind: str,
                     text_of, group_of) -> list[MinimalPair]:
    groups: dict[tuple[str, ...], dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        key = tuple(row[c] for c in key_cols)
        side = "pos" if row["correct"] == "1" else "neg"
        if side in groups[key]:
            raise ValueError(f"{folder / 'gold.csv'}: two {'correct' if side == 'pos' else 'incorrect'} items "
                             f"for {dict(zip(key_cols, key))}")
        groups[key][side] = row
    pairs = []
    for key, sides in groups.items():
        if len(sides) != 2:
            raise ValueError(f"{folder / 'gold.csv'}: {dict(zip(key_cols, key))} has no "
                             f"{'incorrect' if 'pos' in sides else 'correct'} partner")
        audio = {}
        for side, row in sides.items():
            path = folder / f"{row['filename']}.wav"
            if not path.is_file():
                raise FileNotFoundError(f"{folder / 'gold.csv'} lists {row['filename']} but {path} does not exist")
            audio[side] = str(path)
        pos, neg = sides["pos"], sides["neg"]
        pairs.append(MinimalPair("/".join(key), kind, audio["pos"], audio["neg"], text_of(pos), text_of(neg),
                                 group_of(pos), pos["voice"], meta={k: v for k, v in pos.items()
                                                                     if k not in ("filename", "correct")}))
    return pairs


def load_swuggy(root: str | Path, split: str = "dev") -> list[MinimalPair]:
    """sWUGGY pairs (word = positive, non-word = negative) from ``lexical/<split>``; see the module docstring."""
    folder = _split_folder(root, "lexical", split)
    rows = read_gold(folder / "gold.csv", LEXICAL_REQUIRED)
    return _pairs_from_gold(folder, rows, ("id", "voice"), "swuggy",
                            text_of=lambda r: r["word"] or r.get("phones", ""), group_of=lambda r: "")


def load_sblimp(root: str | Path, split: str = "dev") -> list[MinimalPair]:
    """sBLIMP pairs (grammatical = positive) from ``syntactic/<split>``; see the module docstring."""
    folder = _split_folder(root, "syntactic", split)
    rows = read_gold(folder / "gold.csv", SYNTACTIC_REQUIRED)
    text_col = "transcription" if "transcription" in rows[0] else "sentence" if "sentence" in rows[0] else None
    if text_col is None:
        raise ValueError(f"{folder / 'gold.csv'}: no sentence column ('transcription' or 'sentence')")
    return _pairs_from_gold(folder, rows, ("type", "subtype", "id", "voice"), "sblimp",
                            text_of=lambda r: r[text_col], group_of=lambda r: f"{r['type']}/{r['subtype']}")


_INDEXED = re.compile(r"^(\d+)_(.+)$")


def _label(stem: str) -> str:
    low = stem.lower()
    if low.endswith("incorrect"):
        return "neg"
    if low.endswith("correct"):
        return "pos"
    return ""


def load_spoken_storycloze(folder: str | Path, kind: str = "ssc") -> list[MinimalPair]:
    """sSC (``kind="ssc"``) or tSC (``"tsc"``) pairs from a folder of ``<index>_<rest>.wav`` files.

    Layout assumed as described in the module docstring; pairs come in index order. Raises
    ``ValueError`` for a file without an integer index, an index without exactly two files, or two
    files with the same label.
    """
    if kind not in ("ssc", "tsc"):
        raise ValueError(f"kind must be 'ssc' or 'tsc', got {kind!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no StoryCloze folder {folder}")
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise ValueError(f"{folder}: no .wav files")
    by_index: dict[int, list[Path]] = defaultdict(list)
    for f in files:
        m = _INDEXED.match(f.stem)
        if m is None:
            raise ValueError(f"{f}: expected a name <index>_<rest>.wav with an integer index")
        by_index[int(m.group(1))].append(f)
    pairs = []
    for index in sorted(by_index):
        members = sorted(by_index[index], key=lambda p: p.name)
        if len(members) != 2:
            raise ValueError(f"{folder}: index {index} has {len(members)} files, expected 2: "
                             f"{[m.name for m in members]}")
        labels = [_label(m.stem) for m in members]
        if sorted(labels) == ["neg", "pos"]:
            pos, neg = (members[0], members[1]) if labels[0] == "pos" else (members[1], members[0])
        elif labels == ["", ""]:
            pos, neg = members
        else:
            raise ValueError(f"{folder}: index {index} files {[m.name for m in members]} do not form one "
                             "correct and one incorrect ending")
        pairs.append(MinimalPair(f"{kind}-{index}", kind, str(pos), str(neg), meta={"index": index}))
    return pairs
