"""Align-SLM recipe (arXiv 2411.01834), end to end:

    corpus (or ``data:``) [+ long-form stories] → phoneme units → unit LM (TWIST-style warm start,
        next-unit pretraining) = "base"
    for round k = 1..K (curriculum):
        train prompts (≈3 s, cut at a word end) → N continuations from the current model
        → vocoder → ASR → AI feedback (judge 1–5, auto-BLEU) → pairs with (s_c, s_r)[k]
        → LoRA-DPO (reference: the frozen base) → "round k"
    control: the base model trained further on next-unit prediction for the DPO rounds' training time
    evaluation of every system on held-out material: judge score / auto-BLEU / GenPPL of continuations
    of test prompts, and likelihood minimal pairs (sWUGGY-, sBLIMP-, S-StoryCloze-, T-StoryCloze-like)
    → summary.json

Every stage caches its result in ``--out`` (corpus, features and benchmarks in the shared cache), so a
rerun resumes where the last one stopped.

Your own data (``data:``, :mod:`speechrl.data.sources`, task ``audio``) takes the corpus's place and needs
only ``audio`` (a ``text`` column is used when present, never required): its units are the unit LM's
pretraining data (train; dev picks the checkpoint), the continued-NTP control's, the curriculum's train
prompts and the ``eval_split`` prompts of the generative metrics. A prompt of a row without a transcript
gets the words its audio speaks up to the prompt's end, transcribed by the recipe's ASR
(:func:`~speechrl.align.continuations.transcribe_prompts`), for the judge to read. The minimal-pair
benchmarks stay as they are: built from the corpus grammar and synthesized (``benchmarks``).

``summary.json``: ``metrics`` per system, ``baseline`` ("base") and ``intervals`` ``{system: {metric:
{"diff", "low", "high", "significant"}}}``: each system's difference to the base with its paired bootstrap
95% interval (:mod:`speechrl.eval.bootstrap`) for ``judge_score`` (resampling the evaluation prompts, the
mean over their continuations' scores) and the minimal-pair accuracies (resampling the pairs), from the
per-item statistics kept in ``items_<eval_split>.json``. Each system's metrics also hold the story-context
diagnostic (:func:`~speechrl.align.minimal_pairs.story_context_use` on the T-StoryCloze-like pairs):
``tsc_ending_given_story`` / ``tsc_ending_alone``, the share of pairs whose true ending has the lower NLL
given the story / with no story; equal values mean the model does not read the story.

``long_form.stories`` adds whole grammar stories to the pretraining (:func:`long_form_sequences`): the
corpus's utterances are single sentences, which never reward reading the sentences before.
``model.tokens: words`` puts a lexicon between the units and the LM (:mod:`speechrl.speech.units.lexicon`):
every unit sequence it reads — pretraining, prompts, benchmark members — becomes the transcripts' words
that its units spell, each word one token warm-started from the text LM's embedding of the word, and what
it samples is spoken by those words' G2P pronunciations (``sampling.max_new_units`` is then converted
at the training data's units per word). ``long_form.text`` adds the training stories' own text, read
into the same tokens, beside their speech.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from tqdm import tqdm

from speechrl import checkpoint, fingerprint
from speechrl.align.continuations import (Prompt, corpus_prompts, sample_continuations, transcribe_prompts,
                                          transcribe_units)
from speechrl.align.feedback import auto_bleu, continuation_nll
from speechrl.align.judge import JudgeConfig, make_judge
from speechrl.align.long_form import story_units
from speechrl.align.minimal_pairs import benchmark_stories, build_benchmark, evaluate_minimal_pairs, story_context_use
from speechrl.align.pairs import (Candidate, PromptCandidates, build_judge_pairs, context_pairs, load_candidates,
                                  save_candidates, save_pairs, score_quantiles)
from speechrl.audio import save_audio
from speechrl.config import ConfigError, check, doc
from speechrl.corpus.build import CorpusConfig, plan
from speechrl.corpus.grammar import Story, fresh_stories, vocabulary
from speechrl.data.features import features
from speechrl.data.sources import DataConfig
from speechrl.eval.bootstrap import intervals, mean_stats
from speechrl.models.hub import cache_dir, load_causal_lm, load_tokenizer
from speechrl.models.unit_lm import UnitLM
from speechrl.parallel import fixed_threads
from speechrl.pipelines.common import dataset_rows, kept_with_features
from speechrl.runlog import MetricsLogger, atomic_write_text, read_json, write_json
from speechrl.speech.units import BLANK_ID, WORD_BOUNDARY_ID, Units, text_phonemes
from speechrl.speech.units.lexicon import LexiconWords
from speechrl.trainers.dpo import DPOConfig, train_dpo
from speechrl.trainers.lora import LoRAConfig
from speechrl.trainers.sft import SFTConfig
from speechrl.trainers.unit_lm import corpus_sequences, pretrain_config, train_unit_lm

BENCHMARKS = ("swuggy", "sblimp", "ssc", "tsc")
log = logging.getLogger(__name__)


@dataclass
class UnitModelConfig:
    lm: str = doc("text LM the unit LM is warm-started from ('smollm2-135m' offline; a hub id or folder)",
                  "smollm2-135m", path="model")
    layers: int | None = doc("keep only the first N decoder layers (CPU speed; None: all)", 4, ge=1)
    tokens: Literal["units", "words"] = doc(
        "what the LM reads: 'units' (deduplicated phoneme units) or 'words' (the units read as the words of the "
        "transcripts' lexicon, speechrl.speech.units.lexicon; each word one token that starts from the text LM's "
        "embedding of the word, spoken by its G2P pronunciation) — recognized units spell a word many ways, and a "
        "unit LM never learns to read a story from them (docs/results.md, issue 24)", "units")


@dataclass
class SamplingConfig:
    n: int = doc("continuations per prompt (paper: 5)", 5, ge=2)
    temperature: float = doc("sampling temperature (SlamKit: 0.8)", 0.8, gt=0)
    top_k: int = doc("top-k (SlamKit: 25)", 25, ge=0)
    top_p: float = doc("nucleus mass", 1.0, gt=0, le=1)
    max_new_units: int = doc("continuation length in deduplicated units (≈12 units per second of speech)", 60, ge=1)
    prompt_seconds: float = doc("prompt length: the words ending within this many seconds (paper: 3 s)", 3.0, gt=0)


@dataclass
class CurriculumConfig:
    rounds: int = doc("K: rounds of sampling → feedback → DPO (paper: 2–3)", 2, ge=1)
    thresholds: Literal["absolute", "quantile"] = doc(
        "absolute: s_c/s_r are judge scores (paper: 3/1 then 4/2); quantile: they are quantiles of the "
        "round's own candidate scores, for a judge whose scale the policy cannot reach", "absolute")
    chosen_min: list[float] = doc("s_c per round: a chosen continuation scores at least this (a judge score, "
                                  "or a quantile in [0, 1])", default_factory=lambda: [3.0, 4.0])
    rejected_max: list[float] = doc("s_r per round: a rejected continuation scores at most this (a judge "
                                    "score, or a quantile in [0, 1])", default_factory=lambda: [1.0, 2.0])
    max_auto_bleu: float = doc("δ: a transcript with bigram auto-BLEU above this is rejected outright", 0.1,
                               ge=0, le=1)
    prompts_per_round: int = doc("train prompts sampled per round", 150, ge=1)
    prompts: Literal["corpus", "stories"] = doc(
        "where the rounds' prompts come from: 'corpus' (≈ prompt_seconds of a training utterance, cut at a word "
        "end) or 'stories' (a long-form training story told up to its last sentence, the judge reading the "
        "story: a continuation that keeps to the story is preferred; needs long_form.stories)", "corpus")
    context_samples: int = doc(
        "context-contrast pairs (not in the paper; 0: off): the policy continues every long-form training story "
        "(told up to its last sentence) this many times each round, and DPO prefers each story's own "
        "continuation over another story's on that story (speechrl.align.pairs.context_pairs) — continuations "
        "that keep to the story, which the offline likelihood judge barely rewards. Known by construction (no "
        "vocoder, ASR or judge), so a thousand cost seconds; DPO sees each once and the judge pairs dpo.epochs "
        "times. Needs long_form.stories", 0, ge=0)
    dev_fraction: float = doc("share of a round's pairs held out to pick the DPO checkpoint", 0.15, ge=0, le=1)


    def validate(self) -> None:
        for key in ("chosen_min", "rejected_max"):
            if len(getattr(self, key)) < self.rounds:
                raise ConfigError(f"{key}: {self.rounds} rounds need {self.rounds} values, got {getattr(self, key)}")
        if self.thresholds == "quantile":
            for key in ("chosen_min", "rejected_max"):
                if not all(0 <= q <= 1 for q in getattr(self, key)):
                    raise ConfigError(f"{key}: quantile thresholds must be in [0, 1], got {getattr(self, key)}")


@dataclass
class LongFormConfig:
    stories: int = doc("whole grammar stories added to the unit LM's pretraining, each told by one of the corpus's "
                       "training voices, none of them a story the evaluation tells: the corpus's utterances are "
                       "single sentences, and only a sequence that holds a story teaches the LM to read one (0: off)",
                       0, ge=0)
    dev_stories: int = doc("more such stories in the pretraining's dev set, which picks the base checkpoint", 50, ge=0)
    seed: int = doc("seed of the stories and of their voices and speeds", 0)
    text: bool = doc("also pretrain on each training story's text, read by G2P into the LM's tokens: the clean "
                     "twin of the recognized story", False)


@dataclass
class BenchmarkConfig:
    pairs: int = doc("pairs per minimal-pair benchmark (sWUGGY/sBLIMP/S-SC/T-SC-like)", 200, ge=1)
    seed: int = doc("seed of the benchmark items", 0)
    voices: list[str] = doc("voices the benchmark items are spoken with", default_factory=lambda: ["piper-joe"])


@dataclass
class AlignSLMRecipe:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: UnitModelConfig = field(default_factory=UnitModelConfig)
    long_form: LongFormConfig = field(default_factory=LongFormConfig)
    pretrain: SFTConfig = field(default_factory=lambda: pretrain_config(
        batch_size=16, max_steps=300, max_tokens=128, eval_every=50, checkpoint_every=50))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(
        lr=1e-4, batch_size=16, epochs=3.0, eval_every=5, checkpoint_every=10, lora=LoRAConfig(r=32, alpha=8)))
    benchmarks: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    test_prompts: int = doc("held-out prompts for the generative metrics", 100, ge=1)
    eval_split: Literal["test", "dev"] = doc("where those prompts come from: 'dev' to choose settings without "
                                             "looking at the test split", "test", affects_results=False)
    eval_continuations: int = doc("continuations per test prompt for the generative metrics", 2, ge=1)
    asr_window_s: float = doc("Whisper's encoder window, seconds, for the clips the feedback transcribes that are "
                              "at most this long (continuations ≈ sampling.max_new_units / 12 s; longer clips get "
                              "Whisper's own 30 s): 10 transcribes short clips 3.75× faster at about the same WER "
                              "(benchmarks/whisper_window.py)", 30.0, ge=1, le=30)
    samples: int = doc("test prompts with audio kept for the report", 12, ge=0)
    eval_all_rounds: bool = doc("evaluate every curriculum round (off: only the last, as the demo does)", True,
                                affects_results=False)
    control: bool = doc("also train and evaluate continued_ntp: the base trained further on next-unit "
                        "prediction for the DPO rounds' training time (the paper's control)", True,
                        affects_results=False)
    seed: int = doc("seed of prompt choice and sampling", 0)


JUDGE_THREADS = 2  # fixed, whatever --threads says: the judge's scores and GenPPL are the same on every machine
# (a torch reduction's last bits depend on the thread count); 2 judges 1.6× faster than 1 on two cores


class Feedback:
    """Continuation unit lists → transcripts → judge scores and auto-BLEU (vocoder, ASR and judge loaded once)."""

    def __init__(self, cfg: JudgeConfig, speech: Callable[[Sequence[int]], list[int]] = list, asr_window_s: float = 30.0):
        from speechrl.speech.transcribe import make_transcriber
        from speechrl.speech.vocoder import PiperPhonemeVocoder

        self.speech = speech  # the LM's tokens → the units the vocoder speaks
        self.vocoder, self.transcriber = PiperPhonemeVocoder(), make_transcriber(window_s=asr_window_s)
        self.lm, self.tokenizer = load_causal_lm(cfg.model), load_tokenizer(cfg.model)  # judge and GenPPL
        self.judge = make_judge(cfg, self.lm, self.tokenizer) if cfg.kind == "local" else make_judge(cfg)

    def __call__(self, prompts: list[Prompt], continuations: list[list[list[int]]]) -> list[PromptCandidates]:
        flat = [(i, c) for i, cs in enumerate(continuations) for c in cs]
        texts = transcribe_units(self.vocoder, self.transcriber, [self.speech(c) for _, c in flat], "feedback")
        spoken = [k for k, t in enumerate(texts) if t.strip()]
        scores: list[float | None] = [1.0] * len(flat)  # nothing intelligible: the rubric's lowest rating
        with fixed_threads(JUDGE_THREADS):  # the scores must not depend on --threads (speechrl.parallel.fixed_threads)
            judged = self.judge.score([prompts[flat[k][0]].text for k in spoken], [texts[k] for k in spoken])
        for k, s in zip(spoken, judged):
            scores[k] = s
        groups = [PromptCandidates(p.id, list(p.units), [], p.text) for p in prompts]
        for (i, units), text, score in zip(flat, texts, scores):
            groups[i].candidates.append(Candidate(text, score, auto_bleu(text), None, list(units)))
        return groups

    def genppl(self, groups: list[PromptCandidates]) -> float:
        """exp(mean NLL per token) of the intelligible continuations given their prompts, under the judge LM."""
        rows = [(g.prompt_text, c.transcript) for g in groups for c in g.candidates if c.transcript.strip()]
        if not rows:
            return math.nan
        with fixed_threads(JUDGE_THREADS):
            nll = continuation_nll(self.lm, self.tokenizer, [p for p, _ in rows], [c for _, c in rows])
        return math.exp(sum(t for t, _ in nll) / sum(n for _, n in nll))


def generative_metrics(groups: list[PromptCandidates], feedback: Feedback | None = None) -> dict[str, float]:
    """Judge score, auto-BLEU and intelligible share of the candidates; GenPPL too when ``feedback`` is
    given (its LM reads every transcript again: as long as judging them)."""
    cands = [c for g in groups for c in g.candidates]
    spoken = [c for c in cands if c.transcript.strip()]
    return {"judge_score": float(np.mean([c.score for c in cands if c.score is not None])),
            "auto_bleu": float(np.mean([c.auto_bleu for c in spoken])) if spoken else math.nan,
            "intelligible": len(spoken) / max(1, len(cands)),
            **({"genppl": feedback.genppl(groups)} if feedback else {})}


def benchmark_sets(cfg: BenchmarkConfig) -> dict[str, list]:
    """The four minimal-pair sets, synthesized and encoded once into the shared cache (one folder: the
    story-cloze sets share their sentences)."""
    root = cache_dir() / "benchmarks"
    return {name: build_benchmark(name, root, cfg.pairs, cfg.seed, cfg.voices) for name in BENCHMARKS}


def long_form_stories(recipe: AlignSLMRecipe, held_out: Sequence[Story] = ()) -> list[Story]:
    """``recipe.long_form``'s stories, dev first: new grammar stories, none with the context of a corpus
    story, of a story-cloze item or of ``held_out``."""
    lf = recipe.long_form
    held_out = [*plan(recipe.corpus)[0], *benchmark_stories(recipe.benchmarks.pairs, recipe.benchmarks.seed), *held_out]
    return fresh_stories(lf.dev_stories + lf.stories, lf.seed, {tuple(x.text for x in st.sentences[:-1]) for st in held_out})


def long_form_sequences(recipe: AlignSLMRecipe, held_out: Sequence[Story] = (), workers: int = 2
                        ) -> tuple[list[list[int]], list[list[int]]]:
    """(train, dev) unit sequences of :func:`long_form_stories` (:mod:`speechrl.align.long_form`; cached in the
    shared cache); with ``long_form.text`` the training stories' G2P phonemes follow their speech."""
    lf = recipe.long_form
    if not lf.stories:
        return [], []
    stories = long_form_stories(recipe, held_out)
    units = story_units(stories, recipe.corpus.voices, recipe.corpus.speeds, lf.seed, cache_dir() / "long_form", workers)
    dev, train = stories[:lf.dev_stories], stories[lf.dev_stories:]
    twins = [text_phonemes(" ".join(x.text for x in st.sentences)).ids for st in train] if lf.text else []
    return [units[st.id] for st in train if st.id in units] + twins, [units[st.id] for st in dev if st.id in units]


def story_prompts(recipe: AlignSLMRecipe, workers: int = 2) -> list[Prompt]:
    """``curriculum.prompts: stories``: each long-form training story told up to its last sentence, by the
    voice that tells it in pretraining (its sentences' units from the cache), its text for the judge."""
    lf = recipe.long_form
    stories = long_form_stories(recipe)
    told = [replace(st, sentences=st.sentences[:-1]) for st in stories]
    units = story_units(told, recipe.corpus.voices, recipe.corpus.speeds, lf.seed, cache_dir() / "long_form", workers)
    out = []
    for st in told[lf.dev_stories:]:
        if st.id in units:
            ids, text = units[st.id] + [WORD_BOUNDARY_ID], " ".join(x.text for x in st.sentences)
            out.append(Prompt(ids, [1] * len(ids), text, 0.0, len(text.split()), True, st.id))
    return out


def word_lexicon(recipe: AlignSLMRecipe, split: dict[str, list[dict[str, Any]]]) -> LexiconWords:
    """``model.tokens: words``' lexicon: the words of the train and dev transcripts (+ the story grammar's
    words when ``long_form`` adds its stories)."""
    texts = [r["text"] for k in ("train", "dev") for r in split[k] if r.get("text", "").strip()]
    if not texts:
        raise ValueError("model.tokens: words reads speech as the words of its transcripts' lexicon, and the data "
                         "has no transcripts (a `text` column): use model.tokens: units")
    return LexiconWords.from_texts(texts, vocabulary() if recipe.long_form.stories else ())


def stages(recipe: AlignSLMRecipe) -> list[tuple[str, str, str | None]]:
    """The stages :func:`run` caches in its folder, in order: (name, the file that marks it done, the key
    that file must hold or None) — for ``speechrl run --dry-run``."""
    rounds = [f"round{k}" for k in range(1, recipe.curriculum.rounds + 1)]
    control = ["continued_ntp"] if recipe.control else []
    evaluated = ["base", *(rounds if recipe.eval_all_rounds else rounds[-1:]), *control]
    split = recipe.eval_split
    return ([(s, f"{s}/result.json", None) for s in ["unit_lm", *rounds, *control]]
            + [(f"{split} {s}", f"metrics_{split}.json", s) for s in evaluated])


def run(recipe: AlignSLMRecipe, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    start = time.time()
    logger = MetricsLogger(out)
    cur = recipe.curriculum
    check(cur, "curriculum.")  # a recipe built in code, not loaded, is checked here
    check(recipe.data, "data.")
    for key, value, off in (("prompts", cur.prompts == "stories", "corpus"),
                            ("context_samples", cur.context_samples, 0)):
        if value and not recipe.long_form.stories:
            raise ConfigError(f"curriculum.{key}: {getattr(cur, key)} needs long-form stories to prompt with: "
                              f"set long_form.stories, or curriculum.{key}={off}")
    corpus_dir, rows, data_report = dataset_rows(recipe.data, recipe.corpus, "audio", out)
    feats = features(corpus_dir, rows, "units")
    corpus_fingerprint = {"corpus": fingerprint.of_corpus(rows)} if recipe.data.source == "corpus" else {}
    rows = kept_with_features(rows, feats, corpus_dir, out, data_report)
    by_id = {r["id"]: r for r in rows}
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "dev", "test")}
    if empty := [s for s in dict.fromkeys(("train", "dev", recipe.eval_split)) if not split[s]]:
        raise ValueError(f"data: no {' or '.join(empty)} utterances to pretrain, select or evaluate on "
                         f"(splits of {data_report['path']}: {dict(Counter(r['split'] for r in rows))})")
    benches = benchmark_sets(recipe.benchmarks)
    # what the LM reads (model.tokens): the units, or the lexicon's words they spell
    raw = {k: corpus_sequences(feats, [r["id"] for r in v]) for k, v in split.items()}
    lexicon = word_lexicon(recipe, split) if recipe.model.tokens == "words" else None
    tokens = lexicon.encode if lexicon else list
    seqs = {k: [tokens(x) for x in v] for k, v in raw.items()}
    lm_benches = {k: [replace(p, positive_units=tokens(p.positive_units), negative_units=tokens(p.negative_units))
                      for p in v] for k, v in benches.items()}
    train_prompts = corpus_prompts(split["train"], feats, recipe.sampling.prompt_seconds)
    test_prompts = corpus_prompts(split[recipe.eval_split], feats, recipe.sampling.prompt_seconds)
    test_prompts = [test_prompts[i] for i in sorted(np.random.default_rng(recipe.seed).permutation(len(test_prompts))[:recipe.test_prompts])]
    train_prompts, test_prompts = ([replace(p, units=tokens(p.units)) for p in ps] for ps in (train_prompts, test_prompts))
    s = recipe.sampling  # a continuation of max_new_units units ≈ that many units' worth of words
    units_per_token = sum(map(len, raw["train"])) / max(1, sum(map(len, seqs["train"])))
    max_new = max(1, round(s.max_new_units / units_per_token))
    feedback = Feedback(recipe.judge, lexicon.units if lexicon else list, recipe.asr_window_s)
    test_prompts = transcribe_prompts(test_prompts, by_id, feedback.transcriber)  # audio-only rows: their words
    results_path = out / f"metrics_{recipe.eval_split}.json"  # cached per system
    samples_dir = out / ("eval_samples" if recipe.eval_split == "test" else f"eval_samples_{recipe.eval_split}")
    results: dict[str, Any] = read_json(results_path) if results_path.is_file() else {}
    items_path = out / f"items_{recipe.eval_split}.json"  # per-item statistics of the metrics, for intervals
    items: dict[str, Any] = read_json(items_path) if items_path.is_file() else {}
    fp_path = out / "fingerprints.json"  # the evaluations' entries are computed once, when they run
    fingerprints: dict[str, str] = read_json(fp_path) if fp_path.is_file() else {}
    # the synthetic corpus's audio is hashed; a user source is fingerprinted in run.json
    fingerprints.update(**corpus_fingerprint, units=fingerprint.of_features(feats),
                        benchmarks=fingerprint.of_json({k: [_pair_units(p) for p in v] for k, v in benches.items()}))

    def continuations(model: UnitLM, prompts: list[Prompt], n: int, seed: int) -> list[list[list[int]]]:
        return sample_continuations(model, prompts, n, s.temperature, s.top_k, s.top_p, max_new, seed)

    def evaluate(name: str, model: UnitLM, extra: dict[str, Any] | None = None) -> None:
        if name in results:
            return
        model.eval()
        groups = feedback(test_prompts, continuations(model, test_prompts, recipe.eval_continuations, 10**6))
        fingerprints[f"{recipe.eval_split} {name}"] = fingerprint.of_json(
            [[c.units for c in g.candidates] for g in groups])  # the sampled continuations
        write_json(fp_path, fingerprints)
        metrics = generative_metrics(groups, feedback)
        per_item = {"judge_score": mean_stats([[c.score for c in g.candidates if c.score is not None]
                                               for g in groups]).tolist()}
        for bench, pairs in tqdm(lm_benches.items(), desc=f"minimal pairs {name}"):
            scored = evaluate_minimal_pairs(pairs, model.nll)
            metrics[bench] = 100 * scored["accuracy"]
            per_item[bench] = mean_stats([100 * x for x in scored["scores"]]).tolist()
        use = story_context_use(lm_benches["tsc"], model.nll)  # does the model read the story at all?
        metrics.update(tsc_ending_given_story=use["ending|context"], tsc_ending_alone=use["ending alone"])
        items[name] = per_item
        write_json(items_path, items)  # before the metrics: a cached result always has its items
        results[name] = {**metrics, **(extra or {})}
        write_json(results_path, results)
        write_samples(samples_dir / f"{name}.jsonl", name, groups[: recipe.samples], feedback)
        logger.log({f"{recipe.eval_split}_{k}": v for k, v in results[name].items()}, stage=name)

    # base: the unit LM warm-started from the text LM, pretrained on next-unit prediction
    num_units = lexicon.vocab_size if lexicon else BLANK_ID  # words, or phoneme units 0..189 (word boundary included)
    long_train, long_dev = long_form_sequences(recipe)
    if long_train or long_dev:  # the dev stories first: the dev set is cut at pretrain.dev_examples
        seqs["train"] += [tokens(x) for x in long_train]
        seqs["dev"] = [tokens(x) for x in long_dev] + seqs["dev"]
        fingerprints["long_form"] = fingerprint.of_json([long_train, long_dev])
    model = UnitLM.create(recipe.model.lm, num_units, recipe.model.layers, seed=recipe.seed)
    if lexicon:
        fingerprints["lexicon"] = fingerprint.of_json([lexicon.words, lexicon.forms, lexicon.pronunciations])
        model.init_from_text(dict(enumerate(lexicon.forms)), load_tokenizer(recipe.model.lm))
    pretrain = train_unit_lm(model, seqs["train"], seqs["dev"], recipe.pretrain, out / "unit_lm", logger)
    base_weights = out / "unit_lm" / "best" / "model.safetensors"
    fingerprints["unit_lm"] = fingerprint.of_weights(base_weights)
    evaluate("base", model, {"pairs": 0})
    training: dict[str, Any] = {"unit_lm": pretrain}

    # curriculum rounds: sample with the current model, judge, pair, DPO (the adapter keeps training)
    stories = [replace(p, units=tokens(p.units)) for p in story_prompts(recipe)] if (
        cur.prompts == "stories" or cur.context_samples) else []
    pool = stories if cur.prompts == "stories" else train_prompts
    dpo_train_s = 0.0
    evaluated = list(range(1, cur.rounds + 1)) if recipe.eval_all_rounds else [cur.rounds]
    for k in range(1, cur.rounds + 1):
        name, round_dir = f"round{k}", out / f"round{k}"
        candidates_path = round_dir / "candidates.jsonl"
        if not candidates_path.is_file():  # sample and judge once; pairs are rebuilt from these
            model.eval()
            order = np.random.default_rng([recipe.seed, k]).permutation(len(pool))
            chosen = order[: cur.prompts_per_round]
            prompts = transcribe_prompts([pool[i] for i in sorted(chosen)], by_id, feedback.transcriber)
            save_candidates(feedback(prompts, continuations(model, prompts, s.n, recipe.seed + k)), candidates_path)
        groups = load_candidates(candidates_path)
        s_c, s_r = cur.chosen_min[k - 1], cur.rejected_max[k - 1]
        if cur.thresholds == "quantile":
            s_c, s_r = score_quantiles(groups, s_c, s_r, cur.max_auto_bleu)
        pairs, stats = build_judge_pairs(groups, s_c, s_r, cur.max_auto_bleu)
        fingerprints[f"{name} candidates"] = fingerprint.of_jsonl(candidates_path)  # units, transcripts, scores
        contrast = []
        if cur.context_samples:
            context_path = round_dir / "context.jsonl"
            if not context_path.is_file():  # every training story continued by the current policy
                model.eval()
                conts = continuations(model, stories, cur.context_samples, recipe.seed + 1000 * k)
                save_candidates([PromptCandidates(p.id, p.units, [Candidate("", None, math.nan, None, c) for c in cs],
                                                  p.text) for p, cs in zip(stories, conts)], context_path)
            fingerprints[f"{name} context"] = fingerprint.of_jsonl(context_path)
            contrast = context_pairs(load_candidates(context_path), [recipe.seed, k])
            stats["context_pairs"] = len(contrast)
        stats = {**stats, "chosen_min": s_c, "rejected_max": s_r, **generative_metrics(groups)}
        _check_round_settings(round_dir, {"thresholds": cur.thresholds, "chosen_min": cur.chosen_min[k - 1],
                                          "rejected_max": cur.rejected_max[k - 1], "max_auto_bleu": cur.max_auto_bleu,
                                          **({"context_samples": cur.context_samples} if cur.context_samples else {})})
        save_pairs(pairs + contrast, round_dir / "pairs.jsonl")
        fingerprints[f"{name} pairs"] = fingerprint.of_jsonl(round_dir / "pairs.jsonl")
        write_json(round_dir / "pair_stats.json", stats)
        logger.log({"pairs": len(pairs), "train_judge_score": stats["judge_score"], "chosen_min": s_c,
                    "rejected_max": s_r}, stage=name)
        dpo_cfg = recipe.dpo if k == 1 else DPOConfig(**{**recipe.dpo.__dict__, "warmup_steps": 0})
        train, dev = _dpo_split(pairs, cur.dev_fraction)
        if contrast:  # the judge pairs dpo.epochs times, each context pair once, in one pass (DPO shuffles)
            c_train, c_dev = _dpo_split(contrast, cur.dev_fraction)
            train, dev = train * max(1, round(dpo_cfg.epochs)) + c_train, dev + c_dev
            dpo_cfg = DPOConfig(**{**dpo_cfg.__dict__, "epochs": 1.0})
        if not train:  # nothing to learn from: the round keeps the current model
            log.warning("%s: only %d preference pairs (dropped: %s); the round trains nothing — lower "
                        "curriculum.chosen_min/rejected_max or sample more prompts", name, len(pairs), stats["dropped"])
            training[name] = {"skipped": f"{len(pairs)} pairs", "pair_stats": stats}
            if k in evaluated:
                evaluate(name, model, {"pairs": len(pairs), "dpo_reward_accuracy": math.nan})
            continue
        dpo = train_dpo(model, train, dev, dpo_cfg, round_dir, logger, name)
        dpo_train_s += dpo["train_s"]
        fingerprints[name] = fingerprint.of_weights(round_dir / "best" / "model.safetensors")
        training[name] = {**dpo, "pair_stats": stats}
        if k in evaluated:
            evaluate(name, model, {"pairs": len(pairs), "dpo_reward_accuracy": dpo["best_reward_accuracy"]})

    # control: the base model trained further on next-unit prediction for the DPO rounds' training time
    del model
    if recipe.control:
        control = UnitLM.create(recipe.model.lm, num_units, recipe.model.layers, seed=recipe.seed)
        checkpoint.load_weights(base_weights, control)
        ntp_cfg = SFTConfig(**{**recipe.pretrain.__dict__, "time_budget_s": max(dpo_train_s, 1.0),
                                  "warmup_steps": 0, "max_steps": 10**6, "patience": 0})
        ntp = train_unit_lm(control, seqs["train"], seqs["dev"], ntp_cfg, out / "continued_ntp", logger, "continued_ntp")
        training["continued_ntp"] = {**ntp, "kept_base": ntp["best_step"] == 0}
        ntp_weights = out / "continued_ntp" / "best" / "model.safetensors"
        fingerprints["continued_ntp"] = fingerprint.of_weights(ntp_weights if ntp_weights.is_file() else base_weights)
        if ntp["best_step"] == 0 and "base" in results:  # never beat the base on dev: the base's weights and metrics
            results["continued_ntp"] = results["base"]
            if "base" in items:  # also over items an earlier, trained control left behind
                items["continued_ntp"] = items["base"]
                write_json(items_path, items)
        evaluate("continued_ntp", control, {"pairs": 0})

    systems = ["base", *[f"round{k}" for k in evaluated], *(["continued_ntp"] if recipe.control else [])]
    merge_samples(samples_dir, systems, out / "samples" / "continuations.jsonl")
    summary = {"test_size": len(test_prompts), "eval_split": recipe.eval_split, "wall_s": round(time.time() - start, 1),
               "metrics": {k: results[k] for k in systems}, "baseline": "base",
               "intervals": intervals(items, "base", systems), "training": training,
               "benchmark_pairs": {k: len(v) for k, v in benches.items()}, "data": data_report,
               "fingerprints": fingerprints}
    write_json(fp_path, fingerprints)
    write_json(out / "summary.json", summary)
    return summary


def _dpo_split(pairs: Sequence[Any], dev_fraction: float) -> tuple[list[tuple], list[tuple]]:
    """DPO's (prompt, chosen, rejected) triples of ``pairs``: (train, dev), the first ``dev_fraction`` (≥ 1)
    held out to pick the checkpoint."""
    triples = [(p.prompt_units, p.chosen.units, p.rejected.units) for p in pairs]
    n_dev = max(1, int(len(triples) * dev_fraction))
    return triples[n_dev:], triples[:n_dev]


def _pair_units(pair: Any) -> dict[str, Any]:
    """A benchmark pair's content, without its audio paths (which name the cache folder)."""
    return {k: v for k, v in pair.__dict__.items() if not k.endswith("_audio")}


def _check_round_settings(round_dir: Path, settings: dict[str, Any]) -> None:
    """A round's DPO result is cached in its folder: refuse to reuse it with other pair settings."""
    path = round_dir / "round.json"
    if path.is_file() and (before := read_json(path)) != settings:
        if (round_dir / "result.json").is_file() or checkpoint.latest(round_dir) is not None:
            raise ValueError(f"{round_dir} was trained with pair settings {before}, now {settings}: use a new --out "
                             f"or delete {round_dir} (and the later rounds) to redo it")
    write_json(path, settings)


def write_samples(path: Path, system: str, groups: list[PromptCandidates], feedback: Feedback) -> None:
    """Report rows (generic schema of :mod:`speechrl.report`): the prompt and this system's first
    continuation, both rendered to audio next to the file."""
    audio = path.parent / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    lines = []
    for g in groups:
        c = g.candidates[0]
        prompt_wav, cont_wav = audio / f"{g.prompt_id}-prompt.wav", audio / f"{g.prompt_id}-{system}.wav"
        for wav_path, units in ((prompt_wav, g.prompt_units), (cont_wav, g.prompt_units + c.units)):
            if not wav_path.is_file():
                save_audio(wav_path, feedback.vocoder.render(Units(feedback.speech(units), None, "phoneme")))
        lines.append(json.dumps({"id": g.prompt_id, "prompt_audio": str(prompt_wav), "prompt_text": g.prompt_text,
                                 "score_name": "judge", "systems": {system: {
                                     "audio": str(cont_wav), "text": c.transcript, "score": c.score}}},
                                ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def merge_samples(folder: Path, systems: list[str], path: Path) -> None:
    """One report row per prompt with every system's continuation side by side."""
    rows: dict[str, dict[str, Any]] = {}
    for name in systems:
        f = folder / f"{name}.jsonl"
        for line in f.read_text().splitlines() if f.is_file() else []:
            row = json.loads(line)
            rows.setdefault(row["id"], {**row, "systems": {}})["systems"].update(row["systems"])
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.values()))
