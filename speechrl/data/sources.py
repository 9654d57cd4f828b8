"""Your own speech data in the recipes' row format, with every unusable row recorded, never lost silently.

``data:`` in a recipe names at most one source; none means the synthetic corpus (``corpus:``):

``manifest``
    a JSONL or CSV file: ``audio`` (a path relative to the manifest's folder, or absolute), ``text``, and
    the task's columns — ``translation`` (AST), ``question`` + ``answer`` (spoken QA; one question a row,
    several rows may share an audio file), ``keywords`` (a JSON list; in CSV ``;``-separated) — plus
    optional ``id``, ``speaker`` and ``split`` (train / dev / test).
``librispeech``
    a LibriSpeech root: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` beside
    ``<speaker>-<chapter>-<utterance>.flac``; subsets ``train-*`` → train, ``dev-*`` → dev, ``test-*`` → test.
``covost2``
    a CoVoST 2 folder: ``covost_v2.<pair>.<split>.tsv`` (columns ``path``, ``sentence``, ``translation``,
    ``client_id``) beside Common Voice's ``clips/``.

Splits come from the ``split`` column or the source's named files; rows without one are split by
seeded fractions (``dev_fraction``, ``test_fraction``) grouped by speaker, so no speaker is in two
splits. A source with no train rows but some rows is split the same way.

:func:`load_rows` returns the rows (``id``, absolute ``audio``, ``text``, ``voice`` = speaker, ``split``
and the task columns; the same order on every process) and a report; each skipped row goes to
``rejected.jsonl`` with its reason (missing or unreadable audio, empty or undecodable text, a missing
task column, a duplicate id, a malformed line, an unknown split). The audio header is checked here;
decoding problems found later by feature extraction are recorded by :mod:`speechrl.data.features`. A
source with no usable row at all raises a ``ValueError`` naming the file and its first bad rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import soundfile as sf

from speechrl.audio import MAX_SECONDS, MIN_SECONDS, RejectLog, _sf_name
from speechrl.config import doc
from speechrl.corpus.build import SPLITS

SOURCES = ("manifest", "librispeech", "covost2")
TASK_COLUMNS = {"asr": ("text",), "ast": ("translation",), "sqa": ("question", "answer")}


@dataclass
class DataConfig:
    manifest: str = doc("a JSONL or CSV manifest (audio, text, task columns, optional id/speaker/split)", "")
    librispeech: str = doc("a LibriSpeech root folder (subsets train-*/dev-*/test-*)", "")
    covost2: str = doc("a CoVoST 2 folder (covost_v2.<pair>.<split>.tsv + clips/)", "")
    covost2_pair: str = doc("covost2: the language pair of the TSV names", "en_de")
    dev_fraction: float = doc("rows without a split: the share for dev (grouped by speaker)", 0.1)
    test_fraction: float = doc("rows without a split: the share for test (grouped by speaker)", 0.1)
    seed: int = doc("seed of the split by fractions", 0)
    max_rows: int = doc("use only the first N usable rows (0: all)", 0)

    @property
    def source(self) -> str:
        """``corpus`` (none set) or the one source named; two sources are an error."""
        named = [s for s in SOURCES if getattr(self, s)]
        if len(named) > 1:
            raise ValueError(f"data: set one source, not {named}")
        return named[0] if named else "corpus"

    @property
    def path(self) -> Path:
        return Path(getattr(self, self.source))


class _Rows:
    """Collects rows and rejects: the row format, ids unique, every skip recorded with its reason."""

    def __init__(self, origin: Path, task: str, rejects: RejectLog):
        self.origin, self.task, self.rejects = origin, task, rejects
        self.rows: list[dict[str, Any]] = []
        self.reasons: Counter[str] = Counter()
        self.bad: list[str] = []
        self.ids: set[str] = set()

    def reject(self, where: str, reason: str) -> None:
        kind = reason.split(":")[0]
        self.reasons[kind] += 1
        self.bad.append(f"{where}: {reason}")
        self.rejects.add(f"{self.origin}#{where}", reason, stage="data")

    def add(self, where: str, row: dict[str, Any]) -> None:
        reason = self.problem(row)
        if reason:
            return self.reject(where, reason)
        self.ids.add(row["id"])
        if self.task == "sqa":
            row["questions"] = [{"question": row.pop("question"), "answer": row.pop("answer")}]
        self.rows.append(row)

    def problem(self, row: dict[str, Any]) -> str | None:
        if not row.get("audio"):
            return "no audio column"
        for col in ("id", *TASK_COLUMNS[self.task], "text"):
            value = row.get(col)
            if col == "text" and self.task != "asr" and value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                return f"empty or missing {col}"
        if row["id"] in self.ids:
            return f"duplicate id: {row['id']}"
        if row.get("split") not in (None, "", *SPLITS):
            return f"unknown split: {row['split']!r} (use one of {list(SPLITS)})"
        if not isinstance(row.get("keywords", []), list) or not all(isinstance(k, str) for k in row.get("keywords", [])):
            return "keywords is not a list of strings"
        return audio_problem(Path(row["audio"]))


def audio_problem(path: Path) -> str | None:
    """Why ``path`` cannot be speech audio, from its header alone (None: it looks usable)."""
    if not path.exists():
        return f"missing audio: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    try:
        info = sf.info(_sf_name(path))
    except Exception as err:  # soundfile raises several types for what it cannot read
        return f"unreadable audio: {type(err).__name__}"
    if info.frames <= 0 or info.samplerate <= 0:
        return "unreadable audio: no samples"
    seconds = info.frames / info.samplerate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        return f"audio length: {seconds:.3f} s outside [{MIN_SECONDS}, {MAX_SECONDS}]"
    return None


def _row(uid: str, audio: Path, text: str | None, speaker: str = "", split: str | None = None, **extra: Any) -> dict[str, Any]:
    row = {"id": uid, "audio": str(audio), "text": text, "voice": speaker, "split": split or None, **extra}
    return {k: v for k, v in row.items() if v is not None or k in ("split", "text")}


def _manifest(path: Path, out: _Rows) -> None:
    base = path.parent
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the manifest ({err})") from err
    lines = raw.splitlines()
    if path.suffix.lower() == ".csv":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        records: Iterator[tuple[str, Any]]
        if text is None:  # decode line by line: the bad lines are rejected, the rest kept
            header = lines[0].decode("utf-8", "replace") if lines else ""
            good = [header] + [ln.decode("utf-8") for ln in lines[1:] if _utf8(ln)]
            for n, ln in enumerate(lines[1:], 2):
                if not _utf8(ln):
                    out.reject(f"line {n}", "undecodable text: not UTF-8")
            text = "\n".join(good)
        reader = csv.DictReader(text.splitlines())
        records = ((f"line {n}", r) for n, r in enumerate(reader, 2))
    else:
        def jsonl() -> Iterator[tuple[str, Any]]:
            for n, ln in enumerate(lines, 1):
                if not ln.strip():
                    continue
                try:
                    yield f"line {n}", json.loads(ln.decode("utf-8"))
                except UnicodeDecodeError:
                    out.reject(f"line {n}", "undecodable text: not UTF-8")
                except json.JSONDecodeError as err:
                    out.reject(f"line {n}", f"malformed line: {err.msg}")
        records = jsonl()
    for where, rec in records:
        if not isinstance(rec, dict) or None in rec or any(v is None for v in rec.values()):
            out.reject(where, "malformed line: wrong number of columns" if isinstance(rec, dict) else
                       "malformed line: not an object")
            continue
        keywords = rec.get("keywords", [])
        if isinstance(keywords, str) and path.suffix.lower() == ".csv":
            keywords = [k.strip() for k in keywords.split(";") if k.strip()]
        audio = rec.get("audio")
        uid = str(rec.get("id") or (f"{Path(audio).stem}-q{where.split()[-1]}" if out.task == "sqa" and audio
                                    else Path(audio).stem if audio else where))
        extra = {k: rec[k] for k in ("translation",) if k in rec}
        if out.task == "sqa" and "question" in rec:
            extra.update(question=rec.get("question"), answer=rec.get("answer"))
        elif out.task == "sqa":
            extra.update(question=None)
        row = _row(uid, base / audio if audio else "", rec.get("text"), str(rec.get("speaker", "")),
                   rec.get("split"), keywords=keywords, **extra)
        if not audio:
            row["audio"] = ""
        out.add(where, row)


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _librispeech(root: Path, out: _Rows) -> None:
    for trans in sorted(root.glob("*/*/*/*.trans.txt")):
        subset = trans.parts[-4]
        split = next((s for s in SPLITS if subset.startswith(s)), None)
        for n, line in enumerate(trans.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                uid, _, text = line.decode("utf-8").partition(" ")
            except UnicodeDecodeError:
                out.reject(f"{trans.name}:{n}", "undecodable text: not UTF-8")
                continue
            out.add(f"{trans.name}:{n}", _row(uid, trans.parent / f"{uid}.flac", text.strip().lower(),
                                              uid.split("-")[0], split or f"?{subset}"))


def _covost2(root: Path, pair: str, out: _Rows) -> None:
    for split in SPLITS:
        tsv = root / f"covost_v2.{pair}.{split}.tsv"
        if not tsv.is_file():
            continue
        with tsv.open(encoding="utf-8", errors="replace", newline="") as f:
            for n, rec in enumerate(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 2):
                path = rec.get("path") or ""
                out.add(f"{tsv.name}:{n}", _row(Path(path).stem, root / "clips" / path, rec.get("sentence"),
                                                rec.get("client_id") or "", split, translation=rec.get("translation")))


def assign_splits(rows: list[dict[str, Any]], dev_fraction: float, test_fraction: float, seed: int) -> None:
    """Rows without a split get one by seeded fractions of their speakers (a row without a speaker is its
    own group), so that no speaker is in two splits."""
    groups = sorted({r["voice"] or r["id"] for r in rows if not r.get("split")})
    random.Random(seed).shuffle(groups)
    n_dev, n_test = round(dev_fraction * len(groups)), round(test_fraction * len(groups))
    where = {g: "dev" if i < n_dev else "test" if i < n_dev + n_test else "train" for i, g in enumerate(groups)}
    for r in rows:
        if not r.get("split"):
            r["split"] = where[r["voice"] or r["id"]]


def load_rows(cfg: DataConfig, task: str, rejects_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of ``cfg``'s source for ``task`` and a report ``{source, path, rows, rejected, by_reason,
    splits}``; skipped rows in ``<rejects_dir>/rejected.jsonl`` (see module doc)."""
    source, path = cfg.source, cfg.path
    if source == "corpus":
        raise ValueError("data: no source set (the synthetic corpus is built by corpus_rows)")
    if not path.exists():
        raise ValueError(f"data.{source}: {path} does not exist")
    out = _Rows(path, task, RejectLog(rejects_dir))
    if source == "manifest":
        _manifest(path, out)
    elif source == "librispeech":
        _librispeech(path, out)
    else:
        _covost2(path, cfg.covost2_pair, out)
    rows = out.rows[: cfg.max_rows or None]
    if not rows:
        raise ValueError(f"data.{source}: {path} has no usable row for {task}; first problems: "
                         + ("; ".join(out.bad[:3]) or "no rows found"))
    for r in rows:
        if str(r.get("split", "")).startswith("?"):
            r["split"] = None
    if not any(r.get("split") == "train" for r in rows):
        for r in rows:
            r["split"] = None
    assign_splits(rows, cfg.dev_fraction, cfg.test_fraction, cfg.seed)
    report = {"source": source, "path": str(path), "rows": len(rows), "rejected": sum(out.reasons.values()),
              "by_reason": dict(sorted(out.reasons.items())), "splits": dict(Counter(r["split"] for r in rows))}
    return rows, report


def data_key(cfg: DataConfig) -> str:
    """A short stable name for the feature cache of ``cfg``'s data: its settings and its files' sizes and
    modification times (an edited manifest gets fresh features)."""
    stat = cfg.path.stat()
    payload = json.dumps([cfg.source, str(cfg.path.resolve()), stat.st_size, stat.st_mtime_ns, cfg.covost2_pair],
                         sort_keys=True)
    return f"{cfg.source}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"
