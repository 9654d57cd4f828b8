"""Likelihood minimal pairs (Align-SLM's evaluation) and the offline spoken sets built from the grammar.

**Accuracy.** A speech LM scores both members of a pair through ``nll(sequences) -> [(total_nll,
n_tokens), …]``; with the length-normalised NLL ``ℓ = total_nll / n_tokens``,

    score(pair) = 1 if ℓ(positive) < ℓ(negative), 0.5 if equal, 0 otherwise
    accuracy    = mean over pairs of score(pair)

(ZeroSpeech 2021 and SlamKit count ties as 0.5 too).

**Offline benchmark sets** (:func:`build_benchmark`), made from :mod:`speechrl.corpus.grammar`:

=========  ===========================================================  =========================
name       positive / negative                                          builder
=========  ===========================================================  =========================
swuggy     a vocabulary word / a pronounceable non-word                 ``wuggy_pairs``
sblimp     a grammatical sentence / a one-point ungrammatical variant   ``blimp_pairs``
ssc        story context + true ending / + an entity-swapped ending     ``story_cloze_pairs("ssc")``
tsc        story context + true ending / + another story's ending       ``story_cloze_pairs("tsc")``
=========  ===========================================================  =========================

Both members of pair ``i`` are spoken by the same corpus voice, ``voices[i % len(voices)]``
(:mod:`speechrl.speech.synthesize`), then turned into hama phoneme units and deduplicated
(``make_unit_tokenizer("phoneme")`` → :func:`~speechrl.speech.units.dedup`), on a process pool with a
progress bar. Units are always computed from the saved 16-bit WAV, so a rebuilt set is identical.
The folder holds::

    audio/<key>.wav       one file per (sentence, voice, speed); key = sha1 of the three (a story-cloze
                          member's sentences are synthesized and encoded one by one, joined at a word
                          boundary, and their WAVs joined into one file for listening)
    units.safetensors     key → int32 deduplicated unit ids (shared by all sets in the folder)
    <name>.json           the pairs: id, kind, texts, audio paths, voice, group (and build settings)
    rejected.jsonl        utterances that failed to synthesize or encode (absent when none)

Rebuilding reuses every audio file and unit sequence already there. A pair whose member failed is
left out (and listed in ``rejected.jsonl``). :func:`encode_pairs` gives units to pairs loaded from
real audio (:mod:`speechrl.align.zerospeech`), cached the same way under a key of the file's path,
size and modification time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from safetensors.numpy import load_file, save
from tqdm import tqdm

from speechrl.audio import AudioError, RejectLog, load_audio, save_audio
from speechrl.parallel import pool_map
from speechrl.runlog import atomic_write_bytes, write_json

if TYPE_CHECKING:
    from speechrl.corpus.grammar import Story

__all__ = [
    "MinimalPair",
    "BENCHMARKS",
    "DEFAULT_VOICES",
    "NLLFn",
    "pair_score",
    "likelihood_accuracy",
    "evaluate_minimal_pairs",
    "benchmark_texts",
    "build_benchmark",
    "encode_pairs",
]

BENCHMARKS = ("swuggy", "sblimp", "ssc", "tsc")
DEFAULT_VOICES = ("piper-joe", "espeak-us-m6", "espeak-us-m1", "espeak-gb-m6")  # the corpus' train voices
UNITS_FILE = "units.safetensors"

# nll(list of unit-id sequences) -> [(total NLL in nats, number of scored tokens), ...]
NLLFn = Callable[[list[list[int]]], list[tuple[float, int]]]


@dataclass
class MinimalPair:
    """A positive and a negative utterance, as audio files and (once encoded) unit ids.

    kind: ``swuggy``, ``sblimp``, ``ssc`` or ``tsc``. group: finer label where there is one (the sBLIMP
    phenomenon or ZeroSpeech type/subtype, the sSC perturbation). voice: who speaks both members.
    """

    id: str
    kind: str
    positive_audio: str
    negative_audio: str
    positive_text: str = ""
    negative_text: str = ""
    group: str = ""
    voice: str = ""
    positive_units: list[int] | None = None
    negative_units: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------- accuracy


def _normalised(result: tuple[float, int], what: str) -> float:
    total, n = result
    if n <= 0:
        raise ValueError(f"{what}: n_tokens must be > 0, got {n}")
    return float(total) / n


def pair_score(positive: tuple[float, int], negative: tuple[float, int]) -> float:
    """1.0 when the positive's NLL per token is lower, 0.5 on a tie, else 0.0."""
    pos, neg = _normalised(positive, "positive"), _normalised(negative, "negative")
    return 1.0 if pos < neg else 0.5 if pos == neg else 0.0


def likelihood_accuracy(positives: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]], nll: NLLFn,
                        batch_size: int = 32) -> tuple[float, list[float]]:
    """(accuracy, per-pair scores) of pairs ``(positives[i], negatives[i])`` under ``nll``.

    ``nll`` is called on batches of up to ``batch_size`` sequences (positives and negatives of the
    same pairs together) and must return one ``(total_nll, n_tokens)`` per sequence.
    """
    if len(positives) != len(negatives):
        raise ValueError(f"{len(positives)} positives but {len(negatives)} negatives")
    if not positives:
        raise ValueError("no pairs to evaluate")
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a pair is two sequences), got {batch_size}")
    for side, seqs in (("positive", positives), ("negative", negatives)):
        for i, seq in enumerate(seqs):
            if len(seq) == 0:
                raise ValueError(f"pair {i}: the {side} sequence is empty")
    per_batch = batch_size // 2
    scores: list[float] = []
    for start in range(0, len(positives), per_batch):
        pos = [list(map(int, s)) for s in positives[start:start + per_batch]]
        neg = [list(map(int, s)) for s in negatives[start:start + per_batch]]
        results = nll(pos + neg)
        if len(results) != len(pos) + len(neg):
            raise ValueError(f"nll returned {len(results)} results for {len(pos) + len(neg)} sequences")
        scores += [pair_score(p, n) for p, n in zip(results[:len(pos)], results[len(pos):])]
    return sum(scores) / len(scores), scores


def evaluate_minimal_pairs(pairs: Sequence[MinimalPair], nll: NLLFn, batch_size: int = 32) -> dict[str, Any]:
    """``{"accuracy", "n", "by_group": {group: accuracy}, "scores": [per pair]}`` for encoded pairs."""
    missing = [p.id for p in pairs if p.positive_units is None or p.negative_units is None]
    if missing:
        raise ValueError(f"{len(missing)} pairs have no units (first: {missing[0]}); run encode_pairs first")
    accuracy, scores = likelihood_accuracy([p.positive_units for p in pairs], [p.negative_units for p in pairs],
                                           nll, batch_size)
    groups: dict[str, list[float]] = {}
    for pair, s in zip(pairs, scores):
        if pair.group:
            groups.setdefault(pair.group, []).append(s)
    return {"accuracy": accuracy, "n": len(scores), "scores": scores,
            "by_group": {g: sum(v) / len(v) for g, v in sorted(groups.items())}}


def story_context_use(pairs: Sequence[MinimalPair], nll: NLLFn) -> dict[str, float]:
    """Does the model use the story? Story-cloze pairs (a shared context + two endings) scored three ways:
    ``protocol`` (the benchmark: whole member, NLL per unit), ``ending|context`` (the ending's summed NLL
    given the context) and ``ending alone`` (its summed NLL with no context). A model that reads the
    context scores ``ending|context`` above ``ending alone``; when they are equal the benchmark measures
    the endings' own likelihood, not coherence."""
    contexts, pos_end, neg_end = [], [], []
    for p in pairs:
        a, b = list(p.positive_units), list(p.negative_units)
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if k == 0 or k == len(a) or k == len(b):
            raise ValueError(f"pair {p.id}: the members share no context, or one is the context alone")
        contexts.append(a[:k])
        pos_end.append(a[k:])
        neg_end.append(b[k:])
    n = len(pairs)
    whole = nll([list(p.positive_units) for p in pairs] + [list(p.negative_units) for p in pairs])
    context = nll(contexts)
    alone = nll(pos_end + neg_end)
    given = [whole[i][0] - context[i % n][0] for i in range(2 * n)]

    def accuracy(pos: list[tuple[float, int]], neg: list[tuple[float, int]]) -> float:
        return 100 * sum(pair_score(p, q) for p, q in zip(pos, neg)) / n

    return {"protocol": accuracy(whole[:n], whole[n:]),
            "ending|context": accuracy([(g, 1) for g in given[:n]], [(g, 1) for g in given[n:]]),
            "ending alone": accuracy([(t, 1) for t, _ in alone[:n]], [(t, 1) for t, _ in alone[n:]])}


# ------------------------------------------------------------------------------------ benchmarks


def benchmark_texts(name: str, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """Up to ``n`` ``(positive text, negative text, group)`` triples of benchmark ``name`` (grammar)."""
    return [(" ".join(pos), " ".join(neg), group) for pos, neg, group in benchmark_segments(name, n, seed)]


def benchmark_segments(name: str, n: int, seed: int = 0) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """:func:`benchmark_texts` with each member as its sentences: a story-cloze member is the story's
    context sentences + an ending, so the shared context is synthesized and encoded once per story
    (for both members, and for ``ssc`` and ``tsc`` alike)."""
    from speechrl.corpus import grammar

    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {list(BENCHMARKS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if name == "swuggy":
        return [((p.word,), (p.nonword,), "") for p in grammar.wuggy_pairs(n, seed)]
    if name == "sblimp":
        return [((p.good,), (p.bad,), p.phenomenon) for p in grammar.blimp_pairs(n, seed)]
    items = grammar.story_cloze_pairs(benchmark_stories(n, seed), seed, kinds=(name,))[:n]
    return [((*c.context, c.correct), (*c.context, c.wrong), c.perturbation) for c in items]


def benchmark_stories(n: int, seed: int = 0) -> list[Story]:
    """The stories the story-cloze sets of ``n`` pairs are made of (a tsc item needs an unrelated story,
    so a few more stories than pairs): what long-form pretraining must not tell."""
    from speechrl.corpus import grammar

    return grammar.generate_stories(n + max(4, n // 10), seed)


def sentence_key(text: str, voice: str, speed: float) -> str:
    """The cache key of a sentence spoken by ``voice`` at ``speed`` (its WAV's name, its units' key)."""
    return hashlib.sha1(f"{voice}|{speed:g}|{text}".encode()).hexdigest()[:20]


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


_TOKENIZER: list[Any] = []


def _phoneme_tokenizer():
    if not _TOKENIZER:
        from speechrl.speech.units import make_unit_tokenizer

        _TOKENIZER.append(make_unit_tokenizer("phoneme"))
    return _TOKENIZER[0]


def _unit_job(job: tuple[str, str, str | None, str | None, float]) -> tuple[str, np.ndarray | None, str | None]:
    """(key, deduplicated unit ids or None, error or None); synthesizes the audio first when asked."""
    from speechrl.speech.units import dedup

    key, audio_path, text, voice, speed = job
    stage = "load"
    try:
        if text is not None and not Path(audio_path).is_file():
            from speechrl.speech.synthesize import get_voice, synthesize

            stage = "synthesize"
            wav = synthesize(text, get_voice(voice), speed=speed)
            tmp = Path(audio_path).with_name(f".{Path(audio_path).name}.tmp.wav")
            save_audio(tmp, wav)
            tmp.replace(audio_path)  # a killed build never leaves a truncated wav behind
        stage = "load"
        wav = load_audio(audio_path)
        stage = "encode"
        return key, np.asarray(dedup(_phoneme_tokenizer().encode(wav)).ids, dtype=np.int32), None
    except (AudioError, ValueError, RuntimeError, OSError) as err:
        return key, None, f"{stage}: {err}"


def _load_units(folder: Path) -> dict[str, np.ndarray]:
    path = folder / UNITS_FILE
    return load_file(str(path)) if path.is_file() else {}


def _save_units(folder: Path, units: dict[str, np.ndarray]) -> None:
    arrays = {k: np.ascontiguousarray(v, dtype=np.int32) for k, v in units.items()}
    atomic_write_bytes(folder / UNITS_FILE, save(arrays))


def compute_units(folder: Path, jobs: list[tuple[str, str, str | None, str | None, float]], workers: int,
                  desc: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Units for every job key (cached ones reused); returns (units by key, error by key)."""
    folder.mkdir(parents=True, exist_ok=True)
    units = _load_units(folder)
    todo = list({job[0]: job for job in jobs if job[0] not in units}.values())
    errors: dict[str, str] = {}
    rejects = RejectLog(folder)
    paths = {job[0]: job[1] for job in todo}
    done = 0
    for key, ids, err in tqdm(pool_map(_unit_job, todo, workers), total=len(todo), desc=desc, unit="utt",
                              disable=not todo):
        if ids is None:
            errors[key] = err
            rejects.add(paths[key], err, stage=err.split(":", 1)[0])
        else:
            units[key] = ids
            done += 1
            if done % 100 == 0:  # a long build that dies keeps most of its work
                _save_units(folder, units)
    if todo:
        _save_units(folder, units)
    return units, errors


def build_benchmark(name: str, out_dir: str | Path, n: int = 200, seed: int = 0,
                    voices: Sequence[str] = DEFAULT_VOICES, speed: float = 1.0,
                    workers: int = 2) -> list[MinimalPair]:
    """Synthesize, encode and cache benchmark ``name`` in ``out_dir``; the pairs with their units.

    Pairs come from :func:`benchmark_texts` (up to ``n``; the grammar may have fewer distinct
    items); ``<out_dir>/<name>.json`` records them. See the module docstring for the layout.
    """
    from speechrl.speech.synthesize import get_voice

    if not voices:
        raise ValueError("need at least one voice")
    for v in voices:
        get_voice(v)  # KeyError listing the allowed names
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    plan = []
    jobs = []
    for i, (pos, neg, group) in enumerate(benchmark_segments(name, n, seed)):
        voice = voices[i % len(voices)]
        members = []
        for segments in (pos, neg):
            keys = [sentence_key(text, voice, speed) for text in segments]
            jobs += [(key, str(out / "audio" / f"{key}.wav"), text, voice, float(speed))
                     for key, text in zip(keys, segments)]
            members.append(keys)
        plan.append((f"{name}-{i:04d}", pos, neg, group, voice, members))
    units, _ = compute_units(out, jobs, workers, f"{name} units")
    pairs = []
    for pair_id, pos, neg, group, voice, (kp, kn) in plan:
        if all(k in units for k in kp + kn):
            pairs.append(MinimalPair(pair_id, name, _member_audio(out, kp), _member_audio(out, kn), " ".join(pos),
                                     " ".join(neg), group, voice, joined_units(units, kp),
                                     joined_units(units, kn)))
    record = [{k: v for k, v in p.to_dict().items() if k not in ("positive_units", "negative_units")} for p in pairs]
    write_json(out / f"{name}.json", {"benchmark": name, "seed": seed, "requested": n, "built": len(pairs),
                                      "voices": list(voices), "speed": speed, "pairs": record})
    return pairs


def joined_units(units: dict[str, np.ndarray], keys: list[str]) -> list[int]:
    """A member spoken as several sentences: their unit sequences joined at a word boundary."""
    from speechrl.speech.units import WORD_BOUNDARY_ID

    out: list[int] = []
    for key in keys:
        ids = units[key].tolist()
        if out and ids and out[-1] != WORD_BOUNDARY_ID and ids[0] != WORD_BOUNDARY_ID:
            out.append(WORD_BOUNDARY_ID)
        out += ids
    return out


def _member_audio(out: Path, keys: list[str]) -> str:
    """The member's audio file: its one sentence's WAV, or the sentences' WAVs joined (written once)."""
    if len(keys) == 1:
        return str(out / "audio" / f"{keys[0]}.wav")
    path = out / "audio" / f"{hashlib.sha1('+'.join(keys).encode()).hexdigest()[:20]}.wav"
    if not path.is_file():
        save_audio(path, np.concatenate([load_audio(out / "audio" / f"{k}.wav") for k in keys]))
    return str(path)


def encode_pairs(pairs: Sequence[MinimalPair], cache_dir: str | Path, workers: int = 2) -> list[MinimalPair]:
    """Copies of ``pairs`` with deduplicated phoneme units from their audio files (cached in ``cache_dir``).

    A pair whose audio cannot be loaded or encoded is left out and recorded in
    ``<cache_dir>/rejected.jsonl``.
    """
    folder = Path(cache_dir)
    keyed = []
    jobs = []
    for p in pairs:
        keys = []
        for audio in (p.positive_audio, p.negative_audio):
            path = Path(audio)
            if not path.is_file():
                raise FileNotFoundError(f"pair {p.id}: no audio file {path}")
            key = _file_key(path)
            keys.append(key)
            jobs.append((key, str(path), None, None, 1.0))
        keyed.append((p, keys))
    units, _ = compute_units(folder, jobs, workers, "units")
    return [dataclasses.replace(p, positive_units=units[kp].tolist(), negative_units=units[kn].tolist())
            for p, (kp, kn) in keyed if kp in units and kn in units]
