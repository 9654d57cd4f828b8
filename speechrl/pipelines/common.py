"""Stages every recipe shares: the cached corpus, sample dumps."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from speechrl.config import to_dict
from speechrl.corpus.build import CorpusConfig, build_corpus, load_manifest, synthesize_rows, write_manifest
from speechrl.models.hub import cache_dir
from speechrl.parallel import process_state
from speechrl.runlog import atomic_write_text


def corpus_dir_for(cfg: CorpusConfig) -> Path:
    """The shared cache folder of the corpus ``cfg`` builds (same config → same folder)."""
    keys = to_dict(cfg)
    if not keys["dev_voice"]:  # added later: corpora built without it keep their folders
        del keys["dev_voice"]
    if keys["qa_answers"] == "span":  # added later, likewise; "sentence" rows differ, so their folder does
        del keys["qa_answers"]
    key = hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / "corpora" / f"size{cfg.size}-seed{cfg.seed}-{key}"


def corpus_rows(cfg: CorpusConfig) -> tuple[Path, list[dict[str, Any]]]:
    """Build the corpus once (cached across runs and recipes) and return its folder and manifest rows."""
    folder = corpus_dir_for(cfg)
    with process_state().main_process_first():  # under accelerate launch: rank 0 builds, the others wait
        if not (folder / "summary.json").is_file():
            build_corpus(cfg, folder)
    return folder, load_manifest(folder)


def extra_speech_rows(cfg: CorpusConfig, n: int, exclude: set[str]) -> tuple[Path, list[dict[str, Any]]]:
    """More paired speech for training, built once and cached: ``n`` new sentences of the corpus grammar
    (:func:`~speechrl.corpus.grammar.fresh_sentences`, none of them in ``exclude`` — pass every text of
    the data, so none is a dev or test sentence) spoken by ``cfg``'s training voices at its speeds, as
    training rows (``split`` "train"). Returns the folder (its features cache) and the rows that
    synthesized (a failure is recorded in the folder's ``rejected.jsonl``)."""
    from speechrl.audio import RejectLog
    from speechrl.corpus.grammar import fresh_sentences

    texts = fresh_sentences(n, cfg.seed + 1, exclude)  # a stream of its own: not the RL prompts' (seed)
    key = hashlib.sha1(json.dumps([corpus_dir_for(cfg).name, texts]).encode()).hexdigest()[:12]
    folder = cache_dir() / "corpora" / f"extra{n}-seed{cfg.seed}-{key}"
    with process_state().main_process_first():
        if not (folder / "manifest.jsonl").is_file():
            rng = random.Random(f"extra-{cfg.seed}")
            rows = [{"id": f"extra{i:05d}", "audio": f"audio/extra{i:05d}.wav", "text": text, "split": "train",
                     "voice": rng.choice(cfg.voices), "speed": rng.choice(cfg.speeds)} for i, text in enumerate(texts)]
            write_manifest(folder / "manifest.jsonl", synthesize_rows(folder, rows, cfg, RejectLog(folder)))
    return folder, load_manifest(folder)


def dataset_rows(data: Any, corpus: CorpusConfig, task: str, out: Path | None, corpus_dir: str | None = None
                 ) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """(feature-cache folder, rows, report) of a recipe's data: the synthetic corpus when ``data`` names no
    source (the built folder ``corpus_dir`` when given, else ``corpus`` built once), else the user's source
    (:func:`speechrl.data.sources.load_rows`; skipped rows in ``<out>/rejected.jsonl``, written by the
    main process only — every rank reads the same rows; ``out`` None: not written)."""
    if data.source == "corpus":
        folder, rows = (Path(corpus_dir), load_manifest(corpus_dir)) if corpus_dir else corpus_rows(corpus)
        return folder, rows, {"source": "corpus", "path": str(folder), "rows": len(rows), "rejected": 0,
                              "by_reason": {}}
    from speechrl.data.sources import data_key, load_rows

    folder = cache_dir() / "datasets" / data_key(data)
    with process_state().main_process_first():  # rank 0 writes any clips an hf dataset holds as bytes
        rows, report = load_rows(data, task, out if process_state().is_main_process else None, folder)
    return folder, rows, report


def kept_with_features(rows: list[dict[str, Any]], feats: dict[str, Any], folder: Path, out: Path | None,
                       report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that have features; the others (audio that failed to decode) are added to
    ``<out>/rejected.jsonl`` with the reason the feature stage recorded, and counted in ``report``."""
    from speechrl.audio import RejectLog
    from speechrl.runlog import read_jsonl

    dropped = [r for r in rows if r["id"] not in feats]
    if dropped:
        log = folder / "features" / "rejected.jsonl"
        why = {e["path"]: e["reason"] for e in read_jsonl(log)} if log.is_file() else {}
        rejects = RejectLog(out if process_state().is_main_process else None)
        for r in dropped:
            rejects.add(r["id"], why.get(r["id"], "no features"), stage="features")
        report["rejected"] = report.get("rejected", 0) + len(dropped)
        report.setdefault("by_reason", {})["no features"] = len(dropped)
    return [r for r in rows if r["id"] in feats]


def policy_features(folder: Path, rows: list[dict[str, Any]], policy: Any) -> dict[str, dict[str, Any]]:
    """The cached audio features ``policy`` consumes, for ``rows``: our SpeechLM's front-end kind, or a
    pretrained policy's own feature extractor (cached under ``policy.feature_kind``), with a frozen
    encoder's outputs (:func:`~speechrl.data.features.cached_encodings`)."""
    from speechrl.data.features import cached_encodings, features

    if hasattr(policy, "front_end"):
        feats = features(folder, rows, policy.front_end.kind)
    else:
        feats = features(folder, rows, policy.feature_kind, featurize=policy.featurizer())
    return cached_encodings(folder, feats, policy)


def write_samples(path: Path, examples: list[Any], hyps: list[str]) -> None:
    """One JSON line per example: id, audio, instruction, reference (and ``references``, all accepted
    wordings, when there are several), hypothesis (for the report)."""
    lines = [json.dumps({"id": e.id, "audio": e.audio, "voice": e.voice, "instruction": e.instruction,
                         "reference": e.reference,
                         **({"references": e.all_references} if len(e.all_references) > 1 else {}),
                         "hypothesis": h}, ensure_ascii=False)
             for e, h in zip(examples, hyps)]
    atomic_write_text(path, "\n".join(lines) + "\n")
