"""Build the offline spoken corpus: text → several voices and speeds → 16 kHz WAVs + manifest.

The text is the story grammar's (``text: stories``: consistent short stories whose sentences carry
spoken-QA questions, a Spanish translation and keywords) or open-vocabulary English (``text: wordnet``:
WordNet 3.0's example sentences with their keywords, for ASR; :mod:`speechrl.corpus.wordnet`).

Splits hold out whole stories (train/dev/test) **and** one voice that only the test split uses. The
manifest (``manifest.jsonl``, one row per utterance, loadable with 🤗 ``datasets``) is byte-identical
for a seed. Synthesis runs on a process pool; an utterance that fails to synthesize is recorded in
``rejected.jsonl`` and left out of the manifest, the rest goes on. Re-running into the same folder
reuses the WAVs already there (the stage is cached).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tqdm import tqdm

from speechrl.audio import AudioError, RejectLog, duration, load_audio, save_audio
from speechrl.config import ConfigError, check, doc
from speechrl.parallel import pool_map
from speechrl.corpus.grammar import Story, generate_stories
from speechrl.corpus.wordnet import wordnet_stories
from speechrl.runlog import atomic_write_text, read_jsonl, write_json

SPLITS = ("train", "dev", "test")
SENTENCES_PER_STORY = {"stories": 5, "wordnet": 1}  # a story's mean length in sentences; sizes the corpus


@dataclass
class CorpusConfig:
    size: int = doc("approximate total number of utterances (sentences × voices)", 200, ge=1)
    seed: int = doc("seed for stories, splits, voice and speed choices", 1)
    text: Literal["stories", "wordnet"] = doc(
        "stories: the story grammar (217 words; questions, translations, keywords for every task); wordnet: "
        "open-vocabulary English, WordNet 3.0's example sentences (≈25,000 words; ASR only)", "stories")
    voices: list[str] = doc(
        "voices used in train/dev (and test); names from speechrl.speech.synthesize.VOICES",
        default_factory=lambda: ["piper-joe", "espeak-us-m6", "espeak-us-m1", "espeak-gb-m6"])
    test_voice: str = doc("voice heard only in the test split", "hibari")
    dev_voice: str = doc("voice heard only in the dev split, speaking every dev sentence once as test_voice does "
                         "every test sentence, so that selecting on dev rewards what the test measures: speech of "
                         "a voice never heard in training (empty: dev uses the training voices)", "")
    voices_per_sentence: int = doc("each sentence is spoken by this many distinct voices", 2, ge=1)
    speeds: list[float] = doc("speaking-rate multipliers drawn per utterance", default_factory=lambda: [0.9, 1.0, 1.1],
                              gt=0)
    qa_answers: Literal["span", "sentence"] = doc(
        "the spoken-QA answers the manifest holds: span (each question's answer, a 1–4 word span of its sentence) "
        "or sentence (also `answers`: one-sentence answers in every wording the grammar gives them, the canonical "
        "first, e.g. 'She walked to the market.' / 'Anna walked to the market.' — what spoken QA trains on and "
        "scores against; speechrl.data.tasks)", "span")
    noise_snr_db: list[float] = doc("additive white noise at a signal-to-noise ratio (dB) drawn per utterance from "
                                    "this list, seeded (empty: clean speech)", default_factory=list)
    dev_fraction: float = doc("share of stories in the dev split", 0.1, ge=0, le=1)
    test_fraction: float = doc("share of stories in the test split", 0.2, ge=0, le=1)
    workers: int = doc("synthesis processes", 2, ge=1, affects_results=False)
    transcriber: str = doc("ASR used to measure the corpus (asr_wer)", "whisper-tiny")
    evaluate: bool = doc("measure asr_wer and unit_roundtrip_wer on the test split", True)
    roundtrip_utterances: int = doc("test utterances used for unit_roundtrip_wer", 16, ge=1)

    def validate(self) -> None:
        """Voices that exist, a test voice heard only in test, enough voices per sentence, room for train."""
        from speechrl.speech.synthesize import VOICES

        for key, names in (("voices", self.voices), ("test_voice", [self.test_voice]),
                           ("dev_voice", [self.dev_voice] if self.dev_voice else [])):
            unknown = [v for v in names if v not in VOICES]
            if unknown:
                raise ConfigError(f"{key}: unknown voice(s) {unknown}; choose from {sorted(VOICES)}")
        if self.voices_per_sentence > len(self.voices):
            raise ConfigError(f"voices_per_sentence: {self.voices_per_sentence} is more than the "
                              f"{len(self.voices)} voices; must be in 1..{len(self.voices)}")
        if self.test_voice in self.voices:
            raise ConfigError(f"test_voice: {self.test_voice!r} must not be one of the training voices")
        if self.dev_voice and self.dev_voice in {*self.voices, self.test_voice}:
            raise ConfigError(f"dev_voice: {self.dev_voice!r} must be neither a training voice nor the test voice")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ConfigError(f"test_fraction: dev_fraction + test_fraction = "
                              f"{self.dev_fraction + self.test_fraction:g} leaves no stories to train on")


def split_stories(stories: list[Story], cfg: CorpusConfig) -> dict[str, str]:
    """Story id → split, shuffled with the seed; dev and test get at least one story each."""
    ids = [s.id for s in stories]
    random.Random(cfg.seed * 7919 + 1).shuffle(ids)
    n_test = max(1, round(len(ids) * cfg.test_fraction))
    n_dev = max(1, round(len(ids) * cfg.dev_fraction))
    return {sid: "test" if i < n_test else "dev" if i < n_test + n_dev else "train" for i, sid in enumerate(ids)}


def plan(cfg: CorpusConfig) -> tuple[list[Story], list[dict[str, Any]]]:
    """Stories and the manifest rows to synthesize (without durations), deterministic per seed."""
    check(cfg)  # a config built in code, not loaded, is checked here
    sentences_needed = max(3, -(-cfg.size // cfg.voices_per_sentence))
    rng = random.Random(cfg.seed)
    n_stories = max(3, -(-sentences_needed // SENTENCES_PER_STORY[cfg.text]))
    stories = generate_stories(n_stories, cfg.seed) if cfg.text == "stories" else wordnet_stories(n_stories, cfg.seed)
    splits = split_stories(stories, cfg)
    rows = []
    for story in stories:
        split = splits[story.id]
        for k, sent in enumerate(story.sentences):
            voices = rng.sample(cfg.voices, cfg.voices_per_sentence)
            if split == "test":  # the held-out voice speaks every test sentence once
                voices[0] = cfg.test_voice
            elif split == "dev" and cfg.dev_voice:  # and a second held-out voice every dev sentence
                voices[0] = cfg.dev_voice
            for voice in voices:
                rows.append({
                    "id": f"{story.id}-{k:02d}-{voice}",
                    "audio": f"audio/{story.id}-{k:02d}-{voice}.wav",
                    "text": sent.text,
                    "voice": voice,
                    "speed": rng.choice(cfg.speeds),
                    "split": split,
                    "story_id": story.id,
                    "sentence_index": k,
                    "translation": sent.translation,
                    "keywords": list(sent.keywords),
                    "questions": [{"question": q.question, "answer": q.answer,
                                   **({"answers": q.answers} if cfg.qa_answers == "sentence" else {})}
                                  for q in sent.questions],
                    **({"snr_db": rng.choice(cfg.noise_snr_db)} if cfg.noise_snr_db else {}),
                })
    return stories, rows


def _synthesize_row(job: tuple[str, dict[str, Any], int]) -> tuple[str, float | None, str | None]:
    """Worker: synthesize one row into its WAV (reused when already there); (id, seconds, error)."""
    from speechrl.speech.synthesize import get_voice, synthesize

    out, row, seed = job
    path = Path(out) / row["audio"]
    try:
        if path.is_file():
            return row["id"], duration(load_audio(path)), None
    except AudioError:
        pass  # a half-written file from an interrupted run: synthesize it again
    try:
        wav = synthesize(row["text"], get_voice(row["voice"]), speed=row["speed"], seed=seed)
        if "snr_db" in row:
            wav = add_noise(wav, row["snr_db"], f"{seed}-{row['id']}")
        save_audio(path, wav)
        return row["id"], duration(load_audio(path)), None
    except Exception as err:  # one bad utterance must not stop the corpus
        return row["id"], None, f"{type(err).__name__}: {err}"


def add_noise(wav: np.ndarray, snr_db: float, key: str) -> np.ndarray:
    """``wav`` plus white Gaussian noise at ``snr_db`` relative to its mean power, drawn from a generator
    seeded by ``key`` (the same utterance always gets the same noise), peak-limited to ±1."""
    power = float(np.mean(wav.astype(np.float64) ** 2)) or 1e-8
    seed = int.from_bytes(key.encode(), "little") % (2**63)
    noise = np.random.default_rng(seed).standard_normal(len(wav)) * np.sqrt(power / 10 ** (snr_db / 10))
    noisy = wav + noise.astype(wav.dtype)
    peak = float(np.max(np.abs(noisy))) if len(noisy) else 0.0
    return noisy / peak * 0.99 if peak > 0.99 else noisy


def synthesize_rows(out: Path, rows: list[dict[str, Any]], cfg: CorpusConfig, rejects: RejectLog) -> list[dict]:
    """Fill in ``duration`` for every row that synthesized; failures go to ``rejects``."""
    jobs = [(str(out), row, cfg.seed) for row in rows]
    by_id = {row["id"]: row for row in rows}
    kept = []
    results = pool_map(_synthesize_row, jobs, cfg.workers)
    for rid, seconds, error in tqdm(results, total=len(jobs), desc="synthesize", unit="utt"):
        if error is not None:
            rejects.add(by_id[rid]["audio"], error, stage="synthesize")
            continue
        kept.append({**by_id[rid], "duration": seconds})
    return kept


def measure(out: Path, rows: list[dict[str, Any]], cfg: CorpusConfig) -> dict[str, float]:
    """ASR WER of the test split and the text → speech → units → vocoder → ASR round-trip WER."""
    from speechrl.speech.transcribe import make_transcriber
    from speechrl.speech.vocoder import unit_roundtrip
    from speechrl.text import wer

    test = [r for r in rows if r["split"] == "test"]
    if not test:
        return {}
    asr = make_transcriber(cfg.transcriber)
    wavs = [load_audio(out / r["audio"]) for r in tqdm(test, desc="load test", unit="utt", leave=False)]
    hyps = asr.transcribe(wavs)
    sub = list(range(min(cfg.roundtrip_utterances, len(test))))
    rt_wavs = [unit_roundtrip(wavs[i]) for i in tqdm(sub, desc="unit round-trip", unit="utt")]
    rt_hyps = asr.transcribe(rt_wavs)
    return {
        "asr_wer": round(wer([r["text"] for r in test], hyps), 4),
        "unit_roundtrip_wer": round(wer([test[i]["text"] for i in sub], rt_hyps), 4),
        "roundtrip_utterances": len(sub),
    }


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in sorted(rows, key=lambda r: r["id"])]
    atomic_write_text(path, "\n".join(lines) + "\n")


def build_corpus(cfg: CorpusConfig, out: str | Path) -> dict[str, Any]:
    """Build (or finish building) the corpus in ``out``; returns the summary also saved there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    stories, planned = plan(cfg)
    rejects = RejectLog(out)
    rows = synthesize_rows(out, planned, cfg, rejects)
    write_manifest(out / "manifest.jsonl", rows)
    story_rows = [json.dumps(asdict(s), sort_keys=True, ensure_ascii=False) for s in stories]
    atomic_write_text(out / "stories.jsonl", "\n".join(story_rows) + "\n")
    summary: dict[str, Any] = {
        "num_utterances": len(rows),
        "num_stories": len(stories),
        "voices": sorted({r["voice"] for r in rows}),
        "test_voice": cfg.test_voice,
        "dev_voice": cfg.dev_voice,
        "splits": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
        "rejected": len(rejects),
        "synthesis_s": round(time.time() - start, 1),
    }
    if cfg.evaluate:
        summary.update(measure(out, rows, cfg))
    summary["wall_s"] = round(time.time() - start, 1)
    write_json(out / "summary.json", summary)
    return summary


def load_manifest(corpus_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Manifest rows (optionally one split) with ``audio`` made absolute."""
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no corpus here; build one with `speechrl corpus build --out {corpus_dir}`")
    rows = read_jsonl(path)
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        rows = [r for r in rows if r["split"] == split]
    for r in rows:
        r["audio"] = str(corpus_dir / r["audio"])
    return rows
