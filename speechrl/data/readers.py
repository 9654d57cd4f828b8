"""Readers of each ``data:`` source's on-disk layout → :class:`Record` s, for :mod:`speechrl.data.sources`.

A reader only parses: it yields one :class:`Record` per row (raw values under the canonical names
``audio``, ``text``, ``translation``, ``language``, ``question``, ``answer``, ``questions``,
``keywords``, ``speaker``, ``id``, ``split``, ``duration``; other columns under their own names) and
reports the lines it cannot parse at all (not UTF-8, malformed JSON, a CSV row with the wrong number of
fields) through ``reject(ref, kind, detail)``. Checking the values, the audio and the splits is
:func:`speechrl.data.sources.load_rows`' job. A file that cannot be read at all raises ``ValueError``
naming it.

Layouts (the real ones):

* manifest: JSONL (one object a line), a JSON array, CSV or TSV (a header row).
* LibriSpeech: ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (``<utt-id> TEXT``
  lines) beside ``<utt-id>.flac``; ``<root>`` may also be the folder holding ``LibriSpeech/``.
* CoVoST 2: ``covost_v2.<src>_<tgt>.<split>.tsv`` (``path``, ``sentence``, ``translation``,
  ``client_id``; unquoted, tab-separated) beside Common Voice's ``clips/``; a single
  ``covost_v2.<src>_<tgt>.tsv`` with a ``split`` column works too. ``<tgt>`` is each row's ``language``.
* LibriSQA Part I: JSON arrays of ``{"speech_path", "text", "question", "answer"}``
  (``LibriSQA-PartI-train.json`` / ``-test.json``); ``speech_path`` is relative to a LibriSpeech
  root, with or without its leading ``LibriSpeech/``, and may say ``.wav`` where the file is ``.flac``.
* 🤗 datasets: a ``save_to_disk`` folder, an ``audiofolder`` directory (audio + ``metadata.csv`` /
  ``metadata.jsonl``, at the top or in split sub-folders), another local folder ``load_dataset`` reads
  (parquet, csv, json), or a hub id. Audio columns are cast to ``Audio(decode=False)``: datasets 4.x
  decodes (and, in ``load_dataset("audiofolder")``, even encodes) audio with torchcodec, which this
  project does not install, so an audiofolder's metadata is read here with :mod:`csv` / :mod:`json`
  in the layout datasets defines, and audio stored as bytes is written to a cache folder by the caller.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

Reject = Callable[[str, str, str], None]
"""``reject(ref, kind, detail)``: record a row that could not be parsed."""

CANONICAL = ("audio", "text", "translation", "language", "question", "answer", "questions", "keywords",
             "speaker", "id", "split", "duration")
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "dev", "validation": "dev", "valid": "dev",
               "val": "dev", "test": "test"}
"""Split names a column or a file may use, and the recipe split each one means."""


@dataclass
class Record:
    """One row as read: ``fields`` under canonical names, audio paths relative to ``base``."""

    ref: str
    fields: dict[str, Any]
    base: Path
    split: str | None = None
    """The split the layout names (a subset, a TSV, a datasets split); a split column is in ``fields``."""
    group: str = ""
    """The named part of the source the row comes from (for ``max_rows``)."""


def layout_split(name: str) -> str | None:
    """The recipe split a file, subset or datasets split name means (prefix rule), or None."""
    low = name.lower()
    for prefix, split in (("train", "train"), ("dev", "dev"), ("valid", "dev"), ("val", "dev"), ("test", "test")):
        if low.startswith(prefix):
            return split
    return None


def _utf8(text: str) -> bool:
    """Whether a string decoded with ``surrogateescape`` came from valid UTF-8."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    return raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw  # a UTF-8 byte-order mark


def _rename(rec: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Source column names → canonical ones (``columns`` maps source → canonical); the rest kept."""
    out: dict[str, Any] = {}
    for key, value in rec.items():
        name = columns.get(key, key)
        if name in out and key not in columns:
            continue  # a mapped column wins over a same-named unmapped one
        out[name] = value
    return out


def read_table(path: Path, columns: dict[str, str], reject: Reject, *, split: str | None = None,
               base: Path | None = None, delimiter: str | None = None, quoting: int = csv.QUOTE_MINIMAL,
               group: str = "") -> Iterator[Record]:
    """Records of a JSONL / JSON-array / CSV / TSV file (format from the suffix; ``delimiter`` forces
    a delimited file). CSV keywords are ``;``-separated; empty CSV cells count as absent."""
    raw = _read_bytes(path)
    base = path.parent if base is None else base
    suffix = path.suffix.lower()
    if delimiter is None and suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
    if delimiter is not None:
        yield from _delimited(path, raw, columns, reject, split, base, delimiter, quoting, group)
        return
    if suffix == ".json" and raw.lstrip()[:1] == b"[":
        try:
            items = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable JSON array ({err})") from None
        for i, item in enumerate(items):
            ref = f"{path.name}[{i}]"
            if not isinstance(item, dict):
                reject(ref, "malformed line", f"not an object: {type(item).__name__}")
                continue
            yield Record(ref, _rename(item, columns), base, split, group)
        return
    for n, line in enumerate(raw.splitlines(), 1):
        ref = f"{path.name}:{n}"
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            reject(ref, "not UTF-8", f"byte {line[err.start]:#04x} at column {err.start + 1}")
            continue
        except json.JSONDecodeError as err:
            reject(ref, "malformed line", f"not JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(item, dict):
            reject(ref, "malformed line", f"not a JSON object: {type(item).__name__}")
            continue
        yield Record(ref, _rename(item, columns), base, split, group)


def _delimited(path: Path, raw: bytes, columns: dict[str, str], reject: Reject, split: str | None, base: Path,
               delimiter: str, quoting: int, group: str) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"), newline=""),
                        delimiter=delimiter, quoting=quoting)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as err:
        raise ValueError(f"{path}: unreadable header ({err})") from None
    if not all(_utf8(h) for h in header):
        raise ValueError(f"{path}: the header row is not UTF-8")
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            reject(f"{path.name}:{reader.line_num}", "malformed line", str(err))
            continue
        ref = f"{path.name}:{reader.line_num}"
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if not all(_utf8(c) for c in cells):
            reject(ref, "not UTF-8", "undecodable bytes in the line")
            continue
        if len(cells) != len(header):
            reject(ref, "wrong column count", f"{len(cells)} fields, the header has {len(header)}")
            continue
        rec = {h: c for h, c in zip(header, cells) if c.strip() != ""}
        rec = _rename(rec, columns)
        if isinstance(rec.get("keywords"), str):
            rec["keywords"] = [k.strip() for k in rec["keywords"].split(";") if k.strip()]
        yield Record(ref, rec, base, split, group)


def librispeech(root: Path, subsets: list[str], reject: Reject) -> Iterator[Record]:
    """LibriSpeech utterances, subsets in name order; the subset's prefix names the split."""
    if not any(layout_split(p.name) for p in root.iterdir() if p.is_dir()) and (root / "LibriSpeech").is_dir():
        root = root / "LibriSpeech"
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    missing = [s for s in subsets if s not in found]
    if missing:
        raise ValueError(f"{root}: no LibriSpeech subset {missing} here (found {found})")
    for subset in subsets or found:
        for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
            rel = trans.relative_to(root).as_posix()
            for n, line in enumerate(_read_bytes(trans).splitlines(), 1):
                ref = f"{rel}:{n}"
                if not line.strip():
                    continue
                try:
                    uid, _, text = line.decode("utf-8").strip().partition(" ")
                except UnicodeDecodeError:
                    reject(ref, "not UTF-8", "undecodable bytes in the transcript line")
                    continue
                fields = {"id": uid, "audio": f"{uid}.flac", "text": text.strip().lower(),
                          "speaker": uid.split("-")[0]}
                yield Record(ref, fields, trans.parent, layout_split(subset) or f"?{subset}", subset)


def covost2(root: Path, pair: str, reject: Reject) -> Iterator[Record]:
    """CoVoST 2 rows: the split TSVs of ``pair`` (train, dev, test), or its one TSV with a split column;
    each row's ``language`` is the pair's target (``de`` of ``en_de``)."""
    columns = {"path": "audio", "sentence": "text", "client_id": "speaker"}
    clips = root / "clips" if (root / "clips").is_dir() else root
    tsvs = [(s, root / f"covost_v2.{pair}.{s}.tsv") for s in ("train", "dev", "test")]
    tsvs = [(s, p) for s, p in tsvs if p.is_file()]
    if not tsvs and (root / f"covost_v2.{pair}.tsv").is_file():
        tsvs = [(None, root / f"covost_v2.{pair}.tsv")]
    if not tsvs:
        raise ValueError(f"{root}: no covost_v2.{pair}.<train|dev|test>.tsv here "
                         f"(found {sorted(p.name for p in root.glob('covost_v2.*.tsv'))})")
    target = pair.partition("_")[2] or pair
    for split, tsv in tsvs:
        for rec in read_table(tsv, columns, reject, split=split, base=clips, delimiter="\t",
                              quoting=csv.QUOTE_NONE, group=split or ""):
            rec.fields.setdefault("language", target)
            yield rec


def librisqa_audio(root: Path, speech_path: str) -> str:
    """The file a LibriSQA ``speech_path`` names under ``root`` (the first candidate that exists)."""
    rel = speech_path.strip().lstrip("/")
    stems = [rel, rel[len("LibriSpeech/"):]] if rel.startswith("LibriSpeech/") else [rel, f"LibriSpeech/{rel}"]
    for stem in stems:
        for cand in (root / stem, (root / stem).with_suffix(".flac"), (root / stem).with_suffix(".wav")):
            if cand.is_file():
                return str(cand)
    return str(root / stems[0])


def librisqa(source: Path, audio_root: Path | None, reject: Reject) -> Iterator[Record]:
    """LibriSQA Part I question-answer pairs; the file name (``-train`` / ``-test``) names the split."""
    files = sorted(source.glob("*.json")) + sorted(source.glob("*.jsonl")) if source.is_dir() else [source]
    if not files:
        raise ValueError(f"{source}: no LibriSQA .json file here")
    root = audio_root or (source if source.is_dir() else source.parent)
    columns = {"speech_path": "audio"}
    for f in files:
        split = layout_split(re.split(r"[-_.]", f.stem)[-1])  # LibriSQA-PartI-train.json → train
        for rec in read_table(f, columns, reject, split=split, base=root, group=f.name):
            audio = rec.fields.get("audio")
            if isinstance(audio, str) and audio.strip():
                rec.fields["audio"] = librisqa_audio(root, audio)
                rec.fields.setdefault("id", Path(audio).stem)
                rec.fields.setdefault("speaker", Path(audio).stem.split("-")[0])
            yield rec


def _metadata_files(folder: Path) -> list[Path]:
    return [folder / n for n in ("metadata.jsonl", "metadata.csv") if (folder / n).is_file()][:1]


def is_audiofolder(folder: Path) -> bool:
    return bool(_metadata_files(folder)) or any(_metadata_files(d) for d in folder.iterdir() if d.is_dir())


def audiofolder(folder: Path, columns: dict[str, str], reject: Reject) -> Iterator[Record]:
    """An ``audiofolder`` directory: ``metadata.csv`` / ``metadata.jsonl`` whose ``file_name`` column
    names audio beside it; a sub-folder's name (``train``, ``validation``, ``test``…) is its split."""
    columns = {**columns, "file_name": "audio"}
    columns.pop(next((k for k, v in columns.items() if v == "audio" and k != "file_name"), ""), None)
    subs = sorted((d for d in folder.iterdir() if d.is_dir()),
                  key=lambda d: (_SPLIT_ORDER.get(layout_split(d.name) or "", 3), d.name))
    parts = [(None, folder)] + [(d.name, d) for d in subs]  # train, dev, test, then the others
    for name, d in parts:
        for meta in _metadata_files(d):
            split = (layout_split(name) or f"?{name}") if name else None
            for rec in read_table(meta, columns, reject, split=split, base=d, group=name or ""):
                rec.ref = f"{name}/{rec.ref}" if name else rec.ref
                yield rec


def _to_plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def hf_datasets(spec: str, split: str, config: str, columns: dict[str, str], reject: Reject) -> Iterator[Record]:
    """Rows of a 🤗 datasets source (see the module doc); audio cast to ``Audio(decode=False)``."""
    import datasets

    path = Path(spec)
    local = path.exists()
    if local and path.is_dir() and is_audiofolder(path) and not (path / "dataset_dict.json").is_file() \
            and not (path / "state.json").is_file():
        yield from audiofolder(path, columns, reject)
        return
    try:
        if local and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            ds = datasets.load_from_disk(str(path))
            if split:
                if not isinstance(ds, datasets.DatasetDict) or split not in ds:
                    have = list(ds) if isinstance(ds, datasets.DatasetDict) else "one unnamed split"
                    raise ValueError(f"{spec}: no split {split!r} (has {have})")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(spec, name=config or None, split=split or None)
    except ValueError:
        raise
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, …)
        raise ValueError(f"{spec}: cannot load with datasets ({type(err).__name__}: {err})") from None
    parts = sorted(ds.items(), key=lambda kv: (_SPLIT_ORDER.get(layout_split(kv[0]) or "", 3), kv[0])) \
        if isinstance(ds, datasets.DatasetDict) else [("", ds)]
    base = path if local and path.is_dir() else path.parent if local else Path.cwd()
    audio_col = next(k for k, v in columns.items() if v == "audio")
    for name, part in parts:
        if audio_col not in part.column_names:
            raise ValueError(f"{spec}{':' + name if name else ''}: no audio column {audio_col!r} "
                             f"(columns: {part.column_names}); set data.audio_column")
        if isinstance(part.features[audio_col], datasets.Audio):
            part = part.cast_column(audio_col, datasets.Audio(decode=False))
        named = (layout_split(name) or f"?{name}") if name else None
        for i, ex in enumerate(part):
            rec = _rename({k: _to_plain(v) for k, v in ex.items()}, columns)
            yield Record(f"{name or 'rows'}#{i}", rec, base, named, name)


_SPLIT_ORDER = {"train": 0, "dev": 1, "test": 2}
