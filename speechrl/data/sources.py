"""Your own speech data in the recipes' row format, with every unusable row recorded, never lost silently.

``data:`` in a recipe names at most one source; none means the synthetic corpus (``corpus:``, built by
:func:`speechrl.pipelines.common.corpus_rows`; ``DataConfig().source == "corpus"``):

``manifest``
    a JSONL (or JSON array), CSV or TSV file: ``audio`` (relative to the manifest's folder, or absolute),
    ``text`` (optional for task ``audio``), and the task's columns — ``translation`` (AST), ``question`` + ``answer`` (spoken QA: one
    pair a row, rows of the same audio and id are merged into one row with several questions; a JSONL
    ``questions`` list of ``{question, answer}`` works too, and there an ``answers`` list beside an
    answer gives its accepted wordings, which spoken QA scores against: :mod:`speechrl.data.tasks`),
    ``keywords`` (a JSON list of strings; in CSV ``;``-separated) — plus optional ``id``, ``speaker`` (or
    ``voice``), ``split``, ``duration``. Other columns travel with the row; ``language`` names the
    language of a row's translation (below). The synthetic corpus's own ``manifest.jsonl`` is such a file.
``hf``
    a 🤗 datasets ``save_to_disk`` folder, an ``audiofolder`` directory (audio + ``metadata.csv`` /
    ``metadata.jsonl`` with ``file_name``), another folder ``load_dataset`` reads, or a hub id
    (``hf_split``, ``hf_config``; columns ``audio_column``, ``text_column``, ``translation_column``,
    ``language_column``, ``speaker_column``). Audio is never decoded here (no torchcodec, see
    :mod:`speechrl.data.readers`): rows whose audio is stored as bytes without a readable file are written
    once to ``cache`` (an argument of :func:`load_rows`, into its ``audio/``; default
    ``$SPEECHRL_CACHE/datasets/<data_key>``), named by the bytes' hash, so every process and every run
    finds the same file.
``librispeech``
    a LibriSpeech root: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` beside
    ``<speaker>-<chapter>-<utterance>.flac``; subsets ``train-*`` → train, ``dev-*`` → dev, ``test-*`` →
    test (``librispeech_subsets`` picks some); transcripts are lower-cased.
``covost2``
    a CoVoST 2 folder: ``covost_v2.<covost2_pair>.<split>.tsv`` (``path``, ``sentence``, ``translation``,
    ``client_id``) beside Common Voice's ``clips/``; the pair's target (``de`` of ``en_de``) is every
    row's translation language.
``librisqa``
    LibriSQA Part I JSON file(s) (``speech_path``, ``text``, ``question``, ``answer``;
    ``LibriSQA-PartI-train.json`` → train, ``-test.json`` → test) whose ``speech_path`` lies under
    ``librisqa_audio_root`` (a LibriSpeech root; default: the JSON's folder).

Target language (AST): a row's ``language`` value (a code such as ``de``, ``fr``, ``zh-CN``), else the
CoVoST 2 pair's target, else ``target_language`` (default ``es``, the synthetic corpus's). Rows of several
languages may share a source; each example is prompted with and scored in its own
(:func:`speechrl.data.tasks.task_examples`). The report counts the rows per language (``languages``).

Splits: a row's ``split_column`` value (``train``, ``dev``, ``test``; ``validation``/``valid``/``val``
mean dev), else the split its file names (LibriSpeech subset, CoVoST TSV, datasets split, LibriSQA file),
else seeded fractions (``dev_fraction``, ``test_fraction``) of the rows, whole speakers at a time
(``split_by: speaker``: no speaker in two splits; a row without a speaker is its own group) or row by
row (``split_by: row``); a speaker with rows of a known split takes its other rows there too. When dev
or test ends up empty (e.g. LibriSQA has no dev file) it is carved from train by the same fractions
(whole speakers) — or, with too few speakers in train to spare one, left empty and said so in the
report's ``notes``; no train row at all is an error, and so is a source without any split information
whose speakers are too few to hold out dev and test (set ``split_by: row`` or a fraction to 0).

:func:`load_rows` returns the rows — ``id`` (unique), ``audio`` (absolute), ``text``, ``voice`` (the
speaker, or ""), ``split``, ``duration`` (from the header), ``translation``, ``language`` (AST; other
tasks: when the source names one), ``keywords``, ``questions`` — in the source's order (the same on
every process), and a report ``{source, path, task, rows, rejected, by_reason, splits, …}`` (AST:
``languages``). Each skipped row is appended to ``<rejects_dir>/rejected.jsonl``
(:class:`speechrl.audio.RejectLog`, stage ``data``): its file and line (or index) and
``"<kind>: <detail> (id …)"``. The kinds: ``missing audio``, ``not a file``, ``unreadable audio``,
``empty audio``, ``truncated audio``, ``bad samples`` (NaN/inf; only float files can hold them, and
only those are decoded here), ``audio too short``, ``audio too long`` (``min_seconds``/``max_seconds``),
``no audio column``, ``missing column`` (the task's: ``text`` for every task but ``audio``, ast
``translation``, sqa ``question`` + ``answer``), ``empty text`` (task ``audio``: a missing or blank
transcript is ``""``, not a skip), ``bad value`` (a column of the wrong type), ``not UTF-8``,
``malformed line``, ``wrong column count``, ``duplicate id`` (the first row is kept), ``unknown split``.
Audio is checked from its header (:func:`speechrl.audio.read_header`, ``check_audio``; headerless
``.raw``/``.pcm`` files at ``raw_sample_rate``, carried on their rows); full decoding happens in
feature extraction (:mod:`speechrl.data.features`), which records its own failures. A source with no
usable row raises ``ValueError`` naming the file and its first three bad rows.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import soundfile as sf

from speechrl.audio import (AUDIO_SUFFIXES, MAX_SECONDS, MIN_SECONDS, RAW_SUFFIXES, AudioError, RejectLog,
                            _sf_name, _wav_declared_frames, read_header)
from speechrl.config import ConfigError, doc
from speechrl.corpus.build import SPLITS
from speechrl.data import readers
from speechrl.data.readers import SPLIT_NAMES, Record

SOURCES = ("manifest", "hf", "librispeech", "covost2", "librisqa")
TASK_COLUMNS = {"asr": ("text",), "ast": ("translation",), "sqa": ("question", "answer"), "tts": ("text",),
                "audio": ()}
"""Each task's required columns beside ``audio``; every task but ``audio`` (Align-SLM's speech
continuation) needs ``text`` too."""
SPEAKER_FALLBACKS = ("speaker", "speaker_id", "client_id", "voice")


@dataclass
class DataConfig:
    manifest: str = doc("a JSONL / JSON / CSV / TSV manifest: audio (relative to it, or absolute), text "
                        "(optional for Align-SLM), "
                        "task columns (translation; question + answer; keywords), optional id/speaker/split", "",
                        path="exists")
    hf: str = doc("a 🤗 datasets save_to_disk folder, an audiofolder directory, a local folder "
                  "load_dataset reads, or a hub id", "", path="model")
    hf_split: str = doc("hf: use only this split of the dataset (its rows are then split by the split "
                        "column or the fractions); empty: every split, each naming its rows' split", "")
    hf_config: str = doc("hf: the dataset configuration (load_dataset's name)", "")
    audio_column: str = doc("manifest / hf: the column holding the audio (a path, or datasets Audio)", "audio")
    text_column: str = doc("manifest / hf: the column holding the transcript", "text")
    translation_column: str = doc("manifest / hf: the column holding the translation (AST)", "translation")
    language_column: str = doc("manifest / hf: the column naming a row's translation language (AST; a code such "
                               "as de), used when present", "language")
    target_language: str = doc("AST: the translation language of rows that name none (covost2: the pair's target "
                               "instead); the synthetic corpus's is es", "es")
    speaker_column: str = doc("manifest / hf: the speaker column (if absent: speaker_id, client_id, voice)",
                              "speaker")
    librispeech: str = doc("a LibriSpeech root (subsets train-*/dev-*/test-* become the splits)", "", path="exists")
    librispeech_subsets: list[str] = doc("librispeech: only these subsets (empty: all found)",
                                         default_factory=list)
    covost2: str = doc("a CoVoST 2 folder (covost_v2.<pair>.<split>.tsv + Common Voice clips/)", "", path="exists")
    covost2_pair: str = doc("covost2: the language pair of the TSV names (src_tgt)", "en_de")
    librisqa: str = doc("LibriSQA Part I: a .json file or a folder of them (speech_path, text, question, "
                        "answer)", "", path="exists")
    librisqa_audio_root: str = doc("librisqa: the LibriSpeech root its speech_path values are relative to "
                                   "(empty: the JSON's folder)", "", path="exists")
    split_column: str = doc("the column naming a row's split (train / dev / test), used when present", "split")
    dev_fraction: float = doc("rows without a split (or a missing dev split): the share for dev", 0.1, ge=0, le=1)
    test_fraction: float = doc("rows without a split (or a missing test split): the share for test", 0.1, ge=0, le=1)
    split_by: Literal["speaker", "row"] = doc("split by fractions whole speakers at a time (no speaker in two "
                                              "splits) or row by row", "speaker")
    seed: int = doc("seed of the split by fractions", 0)
    max_rows: int = doc("use at most N usable rows of each named split (subset, TSV, datasets split), or "
                        "of the source when it names none; 0: all", 0, ge=0)
    check_audio: bool = doc("check every audio file's header (readable, length, not truncated; float "
                            "files decoded for NaN) before training", True)
    raw_sample_rate: int = doc("sample rate (Hz) of headerless .raw/.pcm audio (16-bit mono PCM); 0: such "
                               "files are rejected as unreadable", 0, ge=0)
    min_seconds: float = doc("shortest usable clip (s)", MIN_SECONDS, ge=0)
    max_seconds: float = doc("longest usable clip (s)", MAX_SECONDS, gt=0)

    def validate(self) -> None:
        """One source at most; a clip length window that is not empty; room left for train."""
        named = [s for s in SOURCES if getattr(self, s)]
        if len(named) > 1:
            raise ConfigError(f"{named[1]}: set one source, not several: {' and '.join(named)}")
        if self.min_seconds >= self.max_seconds:
            raise ConfigError(f"min_seconds: {self.min_seconds:g} must be below max_seconds {self.max_seconds:g}")
        if not self.target_language.strip():
            raise ConfigError("target_language: empty; give a language code such as es or de")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ConfigError(f"test_fraction: dev_fraction + test_fraction = "
                              f"{self.dev_fraction + self.test_fraction:g} leaves no rows to train on")

    @property
    def source(self) -> str:
        """``corpus`` (none set) or the one source named; two sources are an error naming them."""
        named = [s for s in SOURCES if getattr(self, s)]
        if len(named) > 1:
            raise ValueError(f"data: set one source, not several: {' and '.join(f'data.{s}' for s in named)}")
        return named[0] if named else "corpus"

    @property
    def path(self) -> Path:
        return Path(getattr(self, self.source))


class _Load:
    """Validates records into rows: every skip recorded with its reason, ids unique, QA pairs merged."""

    def __init__(self, cfg: DataConfig, task: str, origin: str, rejects: RejectLog, cache: Path | None):
        self.cfg, self.task, self.origin, self.rejects, self._cache = cfg, task, origin, rejects, cache
        self.rows: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.reasons: Counter[str] = Counter()
        self.bad: list[str] = []
        self.audio_seen: dict[str, tuple[str, str] | float | None] = {}
        self.per_group: Counter[str] = Counter()
        self.capped = 0

    def reject(self, ref: str, kind: str, detail: str, uid: str | None = None) -> None:
        reason = f"{kind}: {detail}" + (f" (id {uid})" if uid else "")
        self.reasons[kind] += 1
        self.bad.append(f"{ref}: {reason}")
        self.rejects.add(f"{self.origin}#{ref}", reason, stage="data")

    @property
    def cache(self) -> Path:
        if self._cache is None:
            from speechrl.cache import cache_dir

            self._cache = cache_dir() / "datasets" / data_key(self.cfg)
        return self._cache / "audio"

    def add(self, rec: Record) -> None:
        if self.cfg.max_rows and self.per_group[rec.group] >= self.cfg.max_rows:
            self.capped += 1
            return
        problem = self._row(rec)
        if problem is not None:
            self.reject(rec.ref, *problem)

    def _row(self, rec: Record) -> tuple[str, str, str | None] | None:  # noqa: C901 (one check a line)
        f, task = rec.fields, self.task
        audio = f.get("audio")
        path_str, data = (audio.get("path"), audio.get("bytes")) if isinstance(audio, dict) else (audio, None)
        if (path_str is None or path_str == "") and not data:
            return "no audio column", f"no {self.cfg.audio_column!r} value", _str(f.get("id"))
        if not isinstance(path_str, (str, type(None))) or not isinstance(data, (bytes, type(None))):
            return "bad value", f"audio is {type(audio).__name__}, not a path", _str(f.get("id"))
        uid = _str(f.get("id")) or self._derived_id(path_str, data, rec.base)
        text = f.get("text")
        if text is None and task == "audio":
            text = ""
        if text is None:
            return "missing column", f"no {self.cfg.text_column!r} value", uid
        if not isinstance(text, str):
            return "bad value", f"text is {type(text).__name__}, not a string", uid
        if not text.strip() and task != "audio":
            return "empty text", "blank transcript", uid
        translation = f.get("translation")
        if translation is not None and not isinstance(translation, str):
            if task == "ast":
                return "bad value", f"translation is {type(translation).__name__}, not a string", uid
            translation = None
        if task == "ast" and not (translation or "").strip():
            return "missing column", "no translation" if translation is None else "empty translation", uid
        language = f.get("language")
        if language is not None and not isinstance(language, str):
            if task == "ast":
                return "bad value", f"language is {type(language).__name__}, not a string", uid
            language = None
        language = (language or "").strip() or (self.cfg.target_language.strip() if task == "ast" else "")
        questions, qa_problem = _questions(f)
        if task == "sqa" and (qa_problem or not questions):
            return (*(qa_problem or ("missing column", "no question and answer")), uid)
        keywords = f.get("keywords", [])
        keywords = [] if keywords is None else keywords
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            return "bad value", f"keywords must be a list of strings, not {json.dumps(keywords)[:60]}", uid
        split, raw_split = None, f.get("split")
        if raw_split is not None and raw_split != "":
            split = SPLIT_NAMES.get(raw_split.strip().lower()) if isinstance(raw_split, str) else None
            if split is None:
                return "unknown split", f"{raw_split!r} (use one of {list(SPLITS)})", uid
        elif rec.split:
            if rec.split.startswith("?"):
                return "unknown split", f"{rec.split[1:]!r} is not a train/dev/test name", uid
            split = rec.split
        path = self._resolve(path_str, data, rec.base)
        if uid in self.by_id:
            first = self.by_id[uid]
            if first["audio"] == path and questions and not qa_problem:
                first["questions"] += [q for q in questions if q not in first["questions"]]
                return None
            return "duplicate id", f"{uid!r} already used by an earlier row", uid
        seconds = self._audio(path)
        if isinstance(seconds, tuple):
            return (*seconds, uid)
        speaker = next((f[k] for k in ("speaker", *SPEAKER_FALLBACKS) if f.get(k) not in (None, "")), "")
        row: dict[str, Any] = {"id": uid, "audio": path, "text": text.strip(), "voice": str(speaker).strip(),
                               "split": split}
        if _number(f.get("duration")) is not None or seconds is not None:
            row["duration"] = round(seconds if seconds is not None else float(f["duration"]), 3)
        if translation is not None:
            row["translation"] = translation.strip()
        if language:
            row["language"] = language
        row["keywords"] = keywords
        row["questions"] = questions if not qa_problem else []
        if Path(path).suffix.lower() in RAW_SUFFIXES and self.cfg.raw_sample_rate:
            row["raw_sample_rate"] = self.cfg.raw_sample_rate  # the feature cache loads it at this rate
        row.update({k: v for k, v in f.items() if k not in row and k not in readers.CANONICAL
                    and k not in SPEAKER_FALLBACKS and isinstance(v, (str, int, float, bool))})
        self.rows.append(row)
        self.by_id[uid] = row
        self.per_group[rec.group] += 1
        return None

    def _derived_id(self, path_str: str | None, data: bytes | None, base: Path) -> str:
        if not path_str:
            return hashlib.sha1(data or b"").hexdigest()[:16]
        p = Path(path_str)
        if not p.is_absolute():
            return p.with_suffix("").as_posix()
        try:
            return p.relative_to(base).with_suffix("").as_posix()
        except ValueError:
            return f"{p.stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}"

    def _resolve(self, path_str: str | None, data: bytes | None, base: Path) -> str:
        """The absolute audio path; bytes without a readable file are written once into the cache."""
        path = (base / path_str) if path_str else None
        if data and (path is None or not path.is_file()):
            from speechrl.runlog import atomic_write_bytes

            suffix = Path(path_str or "").suffix.lower()
            out = self.cache / (hashlib.sha1(data).hexdigest()[:24] + (suffix if suffix in AUDIO_SUFFIXES else ".wav"))
            if not (out.is_file() and out.stat().st_size == len(data)):
                atomic_write_bytes(out, data)
            return str(out.absolute())
        return str(Path(path).absolute())

    def _audio(self, path: str) -> tuple[str, str] | float | None:
        if path not in self.audio_seen:
            self.audio_seen[path] = audio_problem(Path(path), self.cfg.min_seconds, self.cfg.max_seconds,
                                                  self.cfg.check_audio, self.cfg.raw_sample_rate or None)
        return self.audio_seen[path]


def _str(value: Any) -> str:
    return str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _questions(f: dict[str, Any]) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """The row's QA pairs (``question`` + ``answer`` columns, or a ``questions`` list whose items may add
    ``answers``, a list of accepted wordings), and the first problem with them (a half pair, a wrong
    type)."""
    pairs, problem = [], None
    items = f.get("questions")
    if items is not None:
        if not isinstance(items, list):
            return [], ("bad value", f"questions must be a list, not {type(items).__name__}")
        items = list(items)
    q, a = f.get("question"), f.get("answer")
    if q is not None or a is not None:
        items = (items or []) + [{"question": q, "answer": a}]
    for item in items or []:
        q, a = (item.get("question"), item.get("answer")) if isinstance(item, dict) else (None, None)
        answers = (item.get("answers") or []) if isinstance(item, dict) else []
        if not isinstance(item, dict) or not isinstance(q, (str, type(None))) or not isinstance(a, (str, type(None))):
            problem = problem or ("bad value", f"a question/answer that is not text: {json.dumps(item)[:60]}")
        elif not isinstance(answers, list) or not all(isinstance(x, str) for x in answers):
            problem = problem or ("bad value", f"answers must be a list of texts: {json.dumps(item)[:60]}")
        elif not (q or "").strip() or not (a or "").strip():
            problem = problem or ("missing column", "question without answer" if (q or "").strip()
                                  else "answer without question")
        else:
            wordings = [x.strip() for x in answers if x.strip()]
            pairs.append({"question": q.strip(), "answer": a.strip(), **({"answers": wordings} if wordings else {})})
    return pairs, problem


def audio_problem(path: Path, min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
                  check: bool = True, raw_sample_rate: int | None = None) -> tuple[str, str] | float | None:
    """``(kind, detail)`` when ``path`` cannot be speech audio, else its length in seconds (None when
    ``check`` is off: then only its existence is checked). Reads the header; decodes float files only.
    ``raw_sample_rate``: that of headerless ``.raw``/``.pcm`` files (see :mod:`speechrl.audio`)."""
    if not path.exists():
        return "missing audio", f"no file {path}" + (" (a dangling symbolic link)" if path.is_symlink() else "")
    if not path.is_file():
        return "not a file", f"{path} is a {'folder' if path.is_dir() else 'special file'}"
    if not check:
        return None
    if path.stat().st_size == 0:
        return "empty audio", f"{path.name} has 0 bytes"
    try:
        info = read_header(path, raw_sample_rate)
    except AudioError as err:
        return "unreadable audio", f"{path.name}: {err.reason}"
    if info.samplerate <= 0:
        return "unreadable audio", f"{path.name}: sample rate {info.samplerate} in the header"
    if info.frames <= 0 or info.channels < 1:
        return "empty audio", f"{path.name} holds no samples"
    seconds = info.frames / info.samplerate
    if info.format == "WAV" and (declared := _wav_declared_frames(path)) and declared > info.frames:
        return "truncated audio", f"{path.name}: the header declares {declared} frames, the file holds {info.frames}"
    if seconds < min_seconds:
        return "audio too short", f"{seconds:.3f} s < {min_seconds} s"
    if seconds > max_seconds:
        return "audio too long", f"{seconds:.1f} s > {max_seconds} s"
    if info.subtype in ("FLOAT", "DOUBLE"):  # only float samples can be NaN or infinite
        try:
            wav = sf.read(_sf_name(path), dtype="float32", always_2d=True)[0]
        except Exception as err:
            detail = getattr(err, "error_string", None) or str(err).splitlines()[0][:120]
            return "unreadable audio", f"{path.name}: {detail}"
        if not np.all(np.isfinite(wav)):
            return "bad samples", f"{path.name} contains NaN or infinite samples"
    return seconds


def _carve(rows: list[dict[str, Any]], wants: dict[str, float], cfg: DataConfig) -> None:
    """Move whole groups (speakers, or rows) of ``rows`` to the splits of ``wants`` (split → share of
    rows, at least one group each), seeded; the rest becomes train. Too few groups is an error."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["voice"] or f"\0{r['id']}" if cfg.split_by == "speaker" else r["id"], []).append(r)
    keys = sorted(groups)
    random.Random(cfg.seed).shuffle(keys)
    needed = [s for s in ("test", "dev") if wants.get(s, 0) > 0]
    if len(keys) < len(needed) + 1:
        unit = "speakers" if cfg.split_by == "speaker" else "rows"
        raise ValueError(f"data: cannot hold out {' and '.join(needed)} from {len(keys)} {unit} and keep "
                         f"train; give a split column, set data.split_by=row, or set "
                         + " / ".join(f"data.{s}_fraction=0" for s in needed))
    i = 0
    for k, split in enumerate(needed):
        target, count = max(1, round(wants[split] * len(rows))), 0
        while count < target and len(keys) - i > len(needed) - k:
            for r in groups[keys[i]]:
                r["split"] = split
            count, i = count + len(groups[keys[i]]), i + 1
    for key in keys[i:]:
        for r in groups[key]:
            r["split"] = "train"


def assign_splits(rows: list[dict[str, Any]], cfg: DataConfig) -> list[str]:
    """Give every row a split (see the module doc); returns notes on what was derived."""
    notes = []
    if cfg.split_by == "speaker":
        known = {}
        for r in rows:
            if r["split"] and r["voice"]:
                known.setdefault(r["voice"], r["split"])
        for r in rows:
            if not r["split"] and r["voice"] in known:
                r["split"] = known[r["voice"]]
    pool = [r for r in rows if not r["split"]]
    if pool:
        try:
            _carve(pool, {"dev": cfg.dev_fraction, "test": cfg.test_fraction}, cfg)
            notes.append(f"{len(pool)} rows without a split: split by fractions (by {cfg.split_by})")
        except ValueError as err:
            if len(pool) == len(rows):  # no split information at all: nothing to test on
                raise
            for r in pool:  # a few unlabelled rows beside labelled ones: train, said so
                r["split"] = "train"
            notes.append(f"{len(pool)} rows without a split: train ({err})")
    train = [r for r in rows if r["split"] == "train"]
    if not train:
        raise ValueError(f"data: no train rows (splits: {dict(Counter(r['split'] for r in rows))}); "
                         "give train data, or drop the split column to split by fractions")
    fractions = {"dev": cfg.dev_fraction, "test": cfg.test_fraction}
    missing = {s: fractions[s] for s in ("dev", "test") if fractions[s] > 0 and not any(r["split"] == s for r in rows)}
    if missing:
        try:
            _carve(train, missing, cfg)
            notes.append(f"no {' or '.join(missing)} rows: carved from train by fractions (by {cfg.split_by})")
        except ValueError as err:  # too few speakers in train: keep them all for training, and say so
            notes.append(f"no {' or '.join(missing)} rows, and none carved from train: {err}")
    return notes


def _records(cfg: DataConfig, load: _Load) -> Iterator[Record]:
    source, path = cfg.source, cfg.path
    columns = {cfg.audio_column: "audio", cfg.text_column: "text", cfg.translation_column: "translation",
               cfg.language_column: "language", cfg.speaker_column: "speaker", cfg.split_column: "split"}
    if source == "manifest":
        return readers.read_table(path, columns, load.reject)
    if source == "hf":
        return readers.hf_datasets(cfg.hf, cfg.hf_split, cfg.hf_config, columns, load.reject)
    if source == "librispeech":
        return readers.librispeech(path, list(cfg.librispeech_subsets), load.reject)
    if source == "covost2":
        return readers.covost2(path, cfg.covost2_pair, load.reject)
    root = Path(cfg.librisqa_audio_root) if cfg.librisqa_audio_root else None
    return readers.librisqa(path, root, load.reject)


def load_rows(cfg: DataConfig, task: str, rejects_dir: str | Path | None,
              cache: str | Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of ``cfg``'s source for ``task`` and a report ``{source, path, task, rows, rejected,
    by_reason, splits, notes}``; skipped rows appended to ``<rejects_dir>/rejected.jsonl`` (None: not
    written, e.g. on the non-main ranks). ``cache`` is a folder whose ``audio/`` receives audio that a
    datasets source holds only as bytes (see the module doc)."""
    if task not in TASK_COLUMNS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASK_COLUMNS)}")
    source = cfg.source
    if source == "corpus":
        raise ValueError("data: no source set (the synthetic corpus is built by corpus_rows)")
    path = cfg.path
    if source != "hf" and not path.exists():
        raise ValueError(f"data.{source}: {path} does not exist")
    if source == "manifest" and not path.is_file():
        raise ValueError(f"data.manifest: {path} is not a file")
    origin = str(path.absolute()) if path.exists() else str(getattr(cfg, source))
    load = _Load(cfg, task, origin, RejectLog(rejects_dir), Path(cache) if cache is not None else None)
    for rec in _records(cfg, load):
        load.add(rec)
    rows = load.rows
    if not rows:
        found = f"{sum(load.reasons.values())} bad rows; first: " + "; ".join(load.bad[:3]) if load.bad \
            else "no rows found"
        raise ValueError(f"data.{source}: {origin} has no usable row for {task} ({found})")
    notes = assign_splits(rows, cfg)
    report = {"source": source, "path": origin, "task": task, "rows": len(rows),
              "rejected": sum(load.reasons.values()), "by_reason": dict(sorted(load.reasons.items())),
              "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS}, "notes": notes}
    if task == "ast":
        report["languages"] = dict(sorted(Counter(r["language"] for r in rows).items()))
    if task == "sqa":
        report["questions"] = sum(len(r["questions"]) for r in rows)
    if load.capped:
        report["beyond_max_rows"] = load.capped
    return rows, report


def _source_files(cfg: DataConfig) -> list[Path]:
    """The files whose sizes and times stand for the source's content in :func:`data_key`."""
    path = cfg.path
    if not path.exists():
        return []
    if path.is_file():
        return [path]
    patterns = {"librispeech": ("**/*.trans.txt",), "covost2": (f"covost_v2.{cfg.covost2_pair}*.tsv",),
                "librisqa": ("*.json", "*.jsonl"), "hf": ("*", "*/*")}[cfg.source]
    return sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})


def data_key(cfg: DataConfig) -> str:
    """A short stable name for a feature-cache folder of ``cfg``'s data: the settings that decide which
    audio an id names (source, paths, columns, pair, subsets — not the split or length settings, which
    keep the same utterances) and the source files' sizes and modification times (an edited manifest gets
    fresh features). A hub id is keyed by its name, configuration and split."""
    source = cfg.source
    settings = {f.name: getattr(cfg, f.name) for f in fields(cfg)
                if f.name not in ("split_column", "dev_fraction", "test_fraction", "split_by", "seed", "max_rows",
                                  "check_audio", "min_seconds", "max_seconds", "language_column", "target_language")}
    path = cfg.path
    stats = [[str(p.relative_to(path) if p != path else p.name), p.stat().st_size, p.stat().st_mtime_ns]
             for p in _source_files(cfg)]
    payload = json.dumps([source, str(path.absolute()) if path.exists() else str(path), settings, stats],
                         sort_keys=True, default=str)
    return f"{source}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"
