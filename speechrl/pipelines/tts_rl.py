"""TTS RL recipe (Tongyi TTS GRPO, arXiv 2509.18569, vs DiffRO, arXiv 2507.05911), end to end:

    corpus (or ``data:``) + ``extra_speech`` new sentences → speech units (hama phonemes, cached)
           → SFT of the TTS LM (to its best dev NLL;
           it reads the text's BPE tokens, its G2P phonemes or both: ``model.text_input``)
           → Token2Text reward model (ground-truth units → text)
           → from the SFT model: GRPO · DiffRO · GRPO+DiffRO naive · GRPO+DiffRO with sample filtering
           → held-out test texts synthesized, rendered (Piper) and transcribed (Whisper) → summary.json

Test texts are the test split's distinct sentences (held-out stories) that never occur in training;
their reference speech is the corpus audio (the held-out test voice), the ceiling is that speech's own
units rendered through the same vocoder. Every stage caches its result in ``--out`` (the corpus in the
shared cache), so a rerun resumes where the last one stopped.

Your own data (``data:``, :mod:`speechrl.data.sources`, task ``tts``) takes the corpus's place: each row
needs ``audio`` and its ``text`` (a row without one is rejected); the units the TTS LM learns to speak
are extracted from that audio by the same feature stage. Nothing else is needed per row: the speech is
always rendered by the one Piper phoneme vocoder (the units carry what is said and for how long, not
who says it), so a ``speaker`` column only steers the split — by default whole speakers are held out
for dev and test, as the corpus holds out its test voice — and the test split's audio is the reference
speech whose units give the ceiling. ``unseen_texts`` and ``rl_texts`` work as on the corpus (the
``rl_texts`` sentences come from the synthetic corpus's grammar, not from your data's domain; the default
trains RL on your training texts); ``model.rate_head`` needs a numeric ``speed`` column (the corpus's
speaking-rate multiplier). A split with no utterance left is an error before any training.

``summary.json``: ``metrics`` per system, ``baseline`` ("sft") and ``intervals`` ``{system: {metric:
{"diff", "low", "high", "significant"}}}``: each RL system's corpus ``wer``/``cer`` difference to SFT with
its paired bootstrap 95% interval over the test texts (:mod:`speechrl.eval.bootstrap`), from the per-text
edit counts kept in ``items_test.json``. ``judge``: the same on the *judge set* (``judge_set``), the unseen dev
texts after the first ``rl.dev_examples`` — those pick each RL system's step, the judge set is read by no
choice, so a gain that is selection luck shows there before test is read (``metrics_judge.json``,
``items_judge.json``). ``token2text``: how the reward model reads reference units (``dev_wer``, ``test_wer``)
and how it ranks the SFT model's own samples (``within_group_spearman`` against their rendered WER,
:func:`~speechrl.eval.tts.reward_ranking`).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from speechrl import checkpoint, fingerprint
from speechrl.audio import SAMPLE_RATE, save_audio
from speechrl.config import ConfigError, check, doc
from speechrl.corpus.build import CorpusConfig
from speechrl.corpus.grammar import fresh_sentences
from speechrl.data.features import features
from speechrl.data.sources import DataConfig
from speechrl.eval.bootstrap import error_stats, intervals
from speechrl.models.token2text import Token2Text
from speechrl.models.tts_lm import DURATION_EDGES, SpeechVocab, TextInput, TTSLM
from speechrl.pipelines.common import dataset_rows, extra_speech_rows, kept_with_features
from speechrl.rewards.tts import UnitRenderer, evaluation_renderer
from speechrl.speech.units import Units
from speechrl.runlog import MetricsLogger, atomic_write_text, read_json, write_json
from speechrl.text import wer
from speechrl.trainers.sft import SFTConfig
from speechrl.eval.tts import DecodeConfig, evaluate_tts, reward_ranking, sample_speech, tts_metrics
from speechrl.trainers.tts_rl import TTSRLConfig, train_tts_rl
from speechrl.trainers.tts_sft import (TTSExample, train_token2text, train_tts_lm, tts_examples,
                                       unit_tokens)

SYSTEMS = {"grpo": ("grpo", True), "diffro": ("diffro", True), "combined": ("combined", False),
           "combined_filtered": ("combined", True)}
"""System name → (method, sample_filter). ``combined`` is the naive sum (DiffRO on every sample)."""


def tts_corpus() -> CorpusConfig:
    """The TTS corpus: one voice for training targets (Hibari: its units render most intelligibly
    through Piper, and it synthesizes fast), the held-out Piper voice as the test reference speech,
    each sentence spoken once; ≈245 test sentences, ≈210 of them unseen in training."""
    return CorpusConfig(size=1200, voices=["hibari"], test_voice="piper-joe", voices_per_sentence=1,
                        evaluate=False)


def tts_supervised(max_steps: int) -> SFTConfig:
    """The TTS LM's and Token2Text's supervised training: new speech embeddings/heads at a high rate,
    the text LM's layers at a low one, targets of up to 96 speech tokens."""
    return SFTConfig(lr=5e-4, new_lr=2e-3, max_steps=max_steps, warmup_steps=50, patience=2, dev_examples=64,
                     max_tokens=96)


@dataclass
class TTSModelConfig:
    lm: str = doc("text LM: 'smollm2-135m' (offline default), a hub id or a local folder", "smollm2-135m", path="model")
    decoder_layers: int | None = doc("TTS LM: keep the first N decoder layers (None: all)", 2, ge=1)
    text_input: TextInput = doc("what the TTS LM reads: 'bpe' (the text LM's tokens), 'phonemes' (the text's "
                                "hama G2P phonemes, in the speech units' ids) or 'both' (BPE, then phonemes)",
                                "bpe")
    token2text_layers: int | None = doc("Token2Text: keep the first N decoder layers (None: all)", 2, ge=1)
    duration_edges: list[int] = doc("lower bounds (frames) of the duration classes of a speech token",
                                    default_factory=lambda: list(DURATION_EDGES), ge=0)
    rate_head: bool = doc("Token2Text gets a speaking-rate head (needed for DiffRO's MTR, rl.mtr_weight)", False)


@dataclass
class TTSRLRecipe:
    corpus: CorpusConfig = field(default_factory=tts_corpus)
    corpus_dir: str | None = doc("use this built corpus folder instead of building `corpus`", None, path="exists")
    data: DataConfig = field(default_factory=DataConfig)
    model: TTSModelConfig = field(default_factory=TTSModelConfig)
    sft: SFTConfig = field(default_factory=lambda: tts_supervised(max_steps=800))
    token2text: SFTConfig = field(default_factory=lambda: tts_supervised(max_steps=400))
    rl: TTSRLConfig = field(default_factory=lambda: TTSRLConfig(
        # chosen on dev (session 7; 107 unseen dev texts, 24 for selection): GRPO at lr 5e-4, 4 texts × G 8,
        # temperature 0.7 lowered dev WER 0.468 → 0.438 by step 16 (flat to 24); the trainer's lr 2e-3 with
        # 1 text × 8 made every system worse than SFT; DiffRO moved dev only straight-through at lr 5e-4
        lr=5e-4, prompts_per_step=4, temperature=0.7, max_steps=16, straight_through=True,
        # the TTS settings of the shared GRPO block: 128 speech tokens cover a sentence; β 0.1 as Tongyi;
        # every group trained on (a zero-variance group still carries the KL term, as before the core)
        max_new_tokens=128, beta=0.1, dynamic_sampling=False, eval_every=8, dev_examples=24, checkpoint_every=8))
    diffro_steps: int | None = doc("steps of the pure DiffRO system (None: rl.max_steps; its steps are cheap)", 32,
                                   ge=0)
    systems: list[str] = doc("RL systems to train: grpo, diffro, combined (naive), combined_filtered",
                             default_factory=lambda: list(SYSTEMS), affects_results=False)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    test_examples: int = doc("held-out test texts evaluated (0: all)", 0, ge=0)
    extra_speech: int = doc("more paired speech for SFT and Token2Text: this many new sentences of the corpus "
                            "grammar (in no split), spoken by the corpus's training voices and unit-extracted like "
                            "the corpus, built once in the shared cache (1,000: 28 s of Hibari synthesis + 10 s of units on 2 cores); "
                            "0: none. The corpus only, not your `data:`", 0, ge=0)
    token2text_samples: int = doc("Token2Text also learns the SFT model's own speech: this many samples (RL prompts, "
                                  "rl.temperature) rendered and heard by the reward transcriber, each paired with "
                                  "what Whisper heard, so the DiffRO reward is trained on the distribution it scores; "
                                  "0: reference units only", 0, ge=0)
    ranking_texts: int = doc("dev texts on which Token2Text's ranking of the SFT model's samples is measured (4 "
                             "samples each; within-group Spearman ρ against the rendered WER, in summary.json)", 40,
                             ge=1)
    rl_texts: int = doc("RL prompts: this many new sentences of the corpus grammar, text only and never in "
                        "train/dev/test (RL needs no reference speech); 0: the training texts", 0, ge=0)
    unseen_texts: bool = doc("dev and test keep only texts never spoken in training (model selection and "
                             "evaluation on unseen texts)", True)
    judge_set: bool = doc("also score every system on the dev texts after the first rl.dev_examples (which pick "
                          "each RL system's step): a second unseen set that no choice reads, beside test", True)
    samples: int = doc("test texts whose audio is kept under samples/ (for the report)", 12, ge=0)


    def validate(self) -> None:
        """Known systems; one data source: your ``data:`` or the corpus (``corpus_dir`` / ``corpus``)."""
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise ConfigError(f"systems: unknown system(s) {unknown}; choose from {sorted(SYSTEMS)}")
        if self.corpus_dir and self.data.source != "corpus":
            raise ConfigError(f"corpus_dir: set it or data.{self.data.source}, not both (one data source)")
        if self.token2text_samples and self.model.rate_head:
            raise ConfigError("token2text_samples: the policy's samples have no speaking rate for the rate head; set "
                              "model.rate_head: false or token2text_samples: 0")
        if self.extra_speech and (self.data.source != "corpus" or self.corpus_dir):
            raise ConfigError("extra_speech: the extra sentences are the synthetic corpus's grammar, spoken by its "
                              "voices; set it to 0 with your own data or a built corpus_dir")


def splits(recipe: TTSRLRecipe, out: Path | None = None
           ) -> tuple[dict[str, list[TTSExample]], list[str], dict[str, Any]]:
    """train / dev / test examples, the RL prompts (texts) and the data report (rows used and rejected;
    skipped rows written to ``<out>/rejected.jsonl``, none when ``out`` is None). Dev and test keep one
    utterance per distinct text, and (``unseen_texts``) only texts never spoken in training — a dev
    utterance of a training text in the training voice is a copy of a training example, so selecting on
    it rewards memorizing. ``extra_speech`` new sentences' speech joins train. RL prompts: ``rl_texts``
    new sentences (none of the data's or the extra speech's), else the training texts. A split left empty, or a rate head without speaking rates to learn, is an error
    here, before any training."""
    folder, rows, report = dataset_rows(recipe.data, recipe.corpus, "tts", out, recipe.corpus_dir)
    feats = features(folder, rows, "units")
    data_texts = {r["text"] for r in rows}  # RL's new sentences avoid every text of the data
    rows = kept_with_features(rows, feats, folder, out, report)
    data = {s: tts_examples([r for r in rows if r["split"] == s], feats) for s in ("train", "dev", "test")}
    if recipe.extra_speech:
        extra_folder, extra = extra_speech_rows(recipe.corpus, recipe.extra_speech, data_texts)
        extra_feats = features(extra_folder, extra, "units")
        data["train"] += tts_examples([r for r in extra if r["id"] in extra_feats], extra_feats)
        data_texts |= {r["text"] for r in extra}
        report["extra_speech"] = sum(r["id"] in extra_feats for r in extra)
    seen = {e.text for e in data["train"]} if recipe.unseen_texts else set()
    for s in ("dev", "test"):
        texts = set(seen)
        kept = []
        for e in data[s]:
            if e.text not in texts:
                texts.add(e.text)
                kept.append(e)
        data[s] = kept
    empty = [s for s, examples in data.items() if not examples]
    if empty:
        raise ValueError(f"data: no {' or '.join(empty)} utterances"
                         + (" with a text unseen in training (set unseen_texts: false to keep the others)"
                            if recipe.unseen_texts and "train" not in empty else "")
                         + f"; splits of {report['path']}: {dict(Counter(r['split'] for r in rows))}")
    if recipe.model.rate_head and len({e.speed for e in data["train"]}) < 2:
        raise ValueError("model.rate_head: the training utterances have one speaking rate; give your rows a "
                         "numeric `speed` column (the synthetic corpus's speaking-rate multiplier), or set "
                         "model.rate_head: false")
    prompts = (fresh_sentences(recipe.rl_texts, recipe.corpus.seed, data_texts) if recipe.rl_texts
               else [e.text for e in data["train"]])
    data["test"] = data["test"][: recipe.test_examples or None]
    return data, prompts, report


def _write_samples(out: Path, name: str, details: list[dict[str, Any]], n: int) -> None:
    """``samples/<name>.jsonl`` (the report's multi-system schema) + WAVs under ``samples/wavs/<name>/``."""
    lines = []
    for d in details[:n]:
        rel = Path("wavs") / name / f"{d['id']}.wav"
        save_audio(out / "samples" / rel, d["wav"])
        lines.append(json.dumps({"id": d["id"], "prompt_text": d["text"], "reference": d["text"], "score_name": "WER",
                                 "systems": {name: {"audio": str(rel), "text": d["hypothesis"], "score": d["wer"]}}},
                                ensure_ascii=False))
    atomic_write_text(out / "samples" / f"{name}.jsonl", "\n".join(lines) + "\n")


def system_config(recipe: TTSRLRecipe, name: str) -> TTSRLConfig:
    """The trainer config of RL system ``name`` (:data:`SYSTEMS`): the recipe's ``rl`` with the system's
    method and sample filter, and ``diffro_steps`` steps for DiffRO when set."""
    method, sample_filter = SYSTEMS[name]
    steps = recipe.diffro_steps if method == "diffro" and recipe.diffro_steps is not None else recipe.rl.max_steps
    return replace(recipe.rl, method=method, sample_filter=sample_filter, max_steps=steps)


def token2text_wer(model: Token2Text, examples: list[TTSExample], max_tokens: int, batch_size: int = 32) -> float:
    """WER of Token2Text's greedy text from the ground-truth speech tokens."""
    hyps = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        ids, mask = unit_tokens(model.vocab, [e.units for e in chunk], max_tokens, model.device)
        hyps += model.transcribe(ids, mask)
    return round(wer([e.text for e in examples], hyps), 4)


def policy_speech(policy: TTSLM, prompts: list[str], recipe: TTSRLRecipe, renderer: UnitRenderer,
                  path: Path) -> list[TTSExample]:
    """``token2text_samples`` samples of the SFT model (a seeded draw of the RL prompts, cycled when too
    few; ``rl.temperature``), rendered and transcribed as GRPO's reward does: (sample units → what Whisper
    heard) pairs for Token2Text, an empty transcript left out. Cached in ``path``."""
    if not path.is_file():
        order = random.Random(recipe.rl.seed).sample(prompts, len(prompts))
        texts = [order[i % len(order)] for i in range(recipe.token2text_samples)]
        units, wavs, hyps = sample_speech(policy, texts, renderer.windowed(recipe.rl.reward_window_s),
                                          recipe.rl.temperature, recipe.rl.max_new_tokens, recipe.rl.seed,
                                          "token2text samples")
        write_json(path, [{"prompt": t, "heard": h, "ids": u.ids, "durations": u.durations,
                           "seconds": round(len(w) / SAMPLE_RATE, 3)} for t, u, w, h in zip(texts, units, wavs, hyps)])
    return [TTSExample(f"sample-{i}", r["heard"], Units(r["ids"], r["durations"], "phoneme", policy.vocab.frame_rate),
                       r["seconds"]) for i, r in enumerate(read_json(path)) if r["heard"].strip()]


def sft_policy(run: Path, recipe: TTSRLRecipe) -> TTSLM:
    """The SFT model of a finished run folder (its speech vocabulary and best weights), built as :func:`run`
    builds it."""
    torch.manual_seed(recipe.sft.seed)
    policy = TTSLM.create(SpeechVocab.from_dict(read_json(run / "vocab.json")), recipe.model.lm,
                          recipe.model.decoder_layers, recipe.model.text_input)
    checkpoint.load_weights(run / "sft" / "best" / "model.safetensors", policy)
    return policy


def stages(recipe: TTSRLRecipe) -> list[tuple[str, str, str | None]]:
    """The stages :func:`run` caches in its folder, in order: (name, the file that marks it done, the key
    that file must hold or None) — for ``speechrl run --dry-run``."""
    t2t = [("token2text", "token2text/result.json", None)] if any(SYSTEMS[s][0] != "grpo"
                                                                   for s in recipe.systems) else []
    trained = [("sft", "sft/result.json", None), *t2t, *[(s, f"{s}/result.json", None) for s in recipe.systems]]
    judged = [(f"judge {s}", "metrics_judge.json", s) for s in ("sft", *recipe.systems)] if recipe.judge_set else []
    return trained + [(f"test {s}", "metrics_test.json", s) for s in ("ground_truth", "sft", *recipe.systems)] + judged


def run(recipe: TTSRLRecipe, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    start = time.time()
    check(recipe)  # a recipe built in code, not loaded, is checked here
    logger = MetricsLogger(out)
    data, prompts, data_report = splits(recipe, out)
    train, dev, test = data["train"], data["dev"], data["test"]
    judge = dev[recipe.rl.dev_examples:] if recipe.judge_set else []  # unseen dev texts that no choice reads
    stored = {split: tuple(read_json(out / f"{kind}_{split}.json") if (out / f"{kind}_{split}.json").is_file() else {}
                           for kind in ("metrics", "items")) for split in ("test", "judge")}
    results, items = stored["test"]
    renderer = UnitRenderer()  # hears rollouts and samples
    # hears every evaluation, each unit sequence once: an RL system's greedy outputs that equal its SFT model's
    # are not transcribed again
    evaluator = evaluation_renderer()
    training: dict[str, Any] = {}

    def save_results(name: str, metrics: dict[str, Any], details: list[dict[str, Any]], split: str = "test") -> None:
        texts, hyps = [d["text"] for d in details], [d["hypothesis"] for d in details]
        split_results, split_items = stored[split]
        split_items[name] = {"wer": error_stats(texts, hyps).tolist(), "cer": error_stats(texts, hyps, "char").tolist()}
        write_json(out / f"items_{split}.json", split_items)  # before the metrics: a cached result has its items
        split_results[name] = metrics
        write_json(out / f"metrics_{split}.json", split_results)
        if split == "test":
            _write_samples(out, name, details, recipe.samples)
        logger.log({f"{split}_{k}": v for k, v in metrics.items()}, stage=name)

    def evaluate(name: str, policy: TTSLM) -> None:
        """Test, then the judge set (each once: cached in the run folder)."""
        if name not in results:
            metrics, details = evaluate_tts(policy, test, evaluator, recipe.decode, f"test {name}")
            save_results(name, {**metrics, "step_s": training[name]["step_s"]}, details)
        if judge and name not in stored["judge"][0]:
            save_results(name, *evaluate_tts(policy, judge, evaluator, recipe.decode, f"judge {name}"), split="judge")

    # speech vocabulary from the training units
    vocab_path = out / "vocab.json"
    if vocab_path.is_file():
        vocab = SpeechVocab.from_dict(read_json(vocab_path))
    else:
        vocab = SpeechVocab.fit([e.units for e in train], recipe.model.duration_edges)
        write_json(vocab_path, vocab.to_dict())

    # ceiling: the reference speech's own units rendered through the same vocoder
    if "ground_truth" not in results:
        t0 = time.time()
        wavs, hyps = evaluator([e.units for e in test])
        save_results("ground_truth", tts_metrics(test, wavs, hyps, None, time.time() - t0)[0],
                     tts_metrics(test, wavs, hyps)[1])

    def new_policy() -> TTSLM:  # new speech rows initialised from the SFT seed: reruns reproduce
        torch.manual_seed(recipe.sft.seed)
        return TTSLM.create(vocab, recipe.model.lm, recipe.model.decoder_layers, recipe.model.text_input)

    # SFT baseline, to its best dev NLL
    policy = new_policy()
    training["sft"] = train_tts_lm(policy, train, dev, recipe.sft, out / "sft", logger)
    evaluate("sft", policy)
    sft_weights = out / "sft" / "best" / "model.safetensors"
    dev_rl = dev[: recipe.rl.dev_examples]
    sft_dev_path = out / "sft" / "dev_rendered.json"
    if dev_rl and not sft_dev_path.is_file():
        write_json(sft_dev_path, evaluate_tts(policy, dev_rl, evaluator, recipe.decode, "dev sft")[0])
    sft_dev = read_json(sft_dev_path) if dev_rl else None

    # Token2Text reward model, frozen after training — only the systems with a DiffRO term need it
    t2t = None
    if any(SYSTEMS[name][0] != "grpo" for name in recipe.systems):
        rates = sorted({e.speed for e in train}) if recipe.model.rate_head else []
        samples = (policy_speech(policy, prompts, recipe, renderer, out / "token2text_samples.json")
                   if recipe.token2text_samples else [])
        torch.manual_seed(recipe.token2text.seed)
        t2t = Token2Text.create(vocab, recipe.model.lm, recipe.model.token2text_layers, rates)
        training["token2text"] = train_token2text(t2t, train + samples, dev, recipe.token2text, out / "token2text",
                                                  logger)
        if "token2text" not in results:  # how it reads reference units, and ranks the SFT model's samples
            results["token2text"] = {"dev_wer": token2text_wer(t2t, dev, recipe.token2text.max_tokens),
                                     "test_wer": token2text_wer(t2t, test, recipe.token2text.max_tokens),
                                     "policy_samples": len(samples),
                                     **reward_ranking(policy, t2t, [e.text for e in dev[:recipe.ranking_texts]],
                                                      renderer, temperature=recipe.rl.temperature,
                                                      max_new_tokens=recipe.rl.max_new_tokens)}
            write_json(out / "metrics_test.json", results)
            logger.log({f"token2text_{k}": v for k, v in results["token2text"].items()}, stage="token2text")
    del policy

    # RL systems, each from the SFT weights (its own reference)
    for name in recipe.systems:
        cfg = system_config(recipe, name)
        policy = new_policy()
        checkpoint.load_weights(sft_weights, policy)
        training[name] = train_tts_rl(policy, t2t, prompts, dev, cfg, out / name, logger, name, renderer,
                                      recipe.decode, sft_dev, evaluator)
        evaluate(name, policy)
        del policy

    systems = ["sft", *recipe.systems]
    summary = {"test_size": len(test), "wall_s": round(time.time() - start, 1),
               "metrics": {k: results[k] for k in systems}, "baseline": "sft",
               "intervals": intervals(items, "sft", systems),
               "judge": {"texts": len(judge), "metrics": {k: stored["judge"][0][k] for k in systems},
                         "intervals": intervals(stored["judge"][1], "sft", systems)} if judge else None,
               "ground_truth": results["ground_truth"], "token2text": results.get("token2text"),
               "training": {k: {kk: vv for kk, vv in v.items() if kk != "dev"} for k, v in training.items()},
               "data": {**data_report, "train": len(train), "dev": len(dev), "test": len(test),
                        "rl_prompts": len(prompts), "speech_vocab": vocab.output_size},
               "fingerprints": {"units": fingerprint.of_json({k: [(e.id, e.text, list(map(int, e.units.ids)),
                                                                   list(map(int, e.units.durations or [])))
                                                                  for e in v] for k, v in data.items()}),
                                "rl_prompts": fingerprint.of_json(prompts),
                                **fingerprint.of_stages(out, ["sft", "token2text", *recipe.systems]),
                                **{f"{split} {k}": fingerprint.of_json(v) for split, (_, split_items) in stored.items()
                                   for k, v in split_items.items()}}}
    write_json(out / "summary.json", summary)
    return summary
