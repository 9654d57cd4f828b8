"""Speech GRPO recipe (ASR / spoken QA / speech translation), end to end:

    data (the corpus, or ``data:``) → the policy (``model.policy``) → its audio features (a frozen
    encoder's outputs cached) → [zero-shot test of a pretrained policy] → SFT (to its best dev score)
    → GRPO or mixed-policy GRPO (LoRA) → held-out test evaluation of SFT, SFT given the same extra
    time ("sft_extra"), and RL → summary.json (with the data report: rows used and rejected)

``summary.json``: ``metrics`` per system on the test split, ``baseline`` ("sft") and ``intervals``
``{system: {metric: {"diff", "low", "high", "significant"}}}``: each system's difference to SFT with its
paired bootstrap 95% interval over the test items (:mod:`speechrl.eval.bootstrap`) for the headline
metrics (ASR ``wer``/``cer``; spoken QA and translation ``bleu``), from the per-item statistics kept in
``items_test.json``; ``controls`` holds the same against each RL system's control (``"grpo vs sft_extra"``,
and with ``rl_from_zero_shot`` ``"grpo_from_zero_shot vs sft_equal_time"``).

A control trains for as long as its RL system did. On a machine with two or more cores it trains
beside it, in a second process (``controls_beside_rl``): both hold a core, the control stops once it has
trained as long as RL (read from RL's ``result.json`` when RL finishes), and the recipe takes one stage's
time instead of two; its progress goes to ``<out>/<control>/log.txt``.

Every stage caches its result in ``--out`` (and the corpus in the shared cache), so a rerun resumes
where the last one stopped.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from speechrl import checkpoint, fingerprint
from speechrl.config import ConfigError, doc
from speechrl.corpus.build import CorpusConfig
from speechrl.data.tasks import task_examples
from speechrl.data.selection import SelectionConfig, select_rl_data
from speechrl.eval.bootstrap import intervals
from speechrl.eval.speech_tasks import evaluate, scoring_references, task_item_stats
from speechrl.models.speech_lm import SpeechLM
from speechrl.data.sources import DataConfig
from speechrl.parallel import beside, process_state, set_threads, usable_cores
from speechrl.pipelines.common import dataset_rows, kept_with_features, policy_features, write_samples
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
from speechrl.trainers.sft import SFTConfig, train_sft


@dataclass
class ModelConfig:
    policy: str = doc("'speechlm' (ours: the audio front_end + a projector + the causal LM lm, new parts trained "
                      "from scratch) or a pretrained HF speech model loaded through speechrl.models.native."
                      "load_policy: 'whisper-tiny.en' / 'whisper-base' (offline), a hub id (openai/whisper-small, "
                      "Qwen/Qwen2-Audio-7B-Instruct, ibm-granite/granite-speech-3.3-2b) or a local folder", "speechlm",
                      path="model")
    lm: str = doc("speechlm: causal LM, 'smollm2-135m' (offline default), a hub id or a local folder", "smollm2-135m",
                  path="model")
    front_end: Literal["units", "mel", "whisper"] = doc(
        "speechlm: audio front end (units: hama phoneme units; mel: log-mel encoder trained here; whisper: the "
        "pretrained Whisper encoder `encoder`, frozen)", "units")
    encoder: str = doc("speechlm with front_end whisper: the Whisper checkpoint whose encoder it uses",
                       "whisper-tiny.en", path="model")
    decoder_layers: int | None = doc("speechlm: keep only the first N decoder layers (CPU speed; None: all)", None,
                                     ge=1)
    freeze_encoder: bool = doc("pretrained policies: keep the audio encoder frozen in SFT (RL trains a LoRA on the "
                               "LM either way)", True)
    trust_remote_code: bool = doc("pretrained policies: run the checkpoint's own code (only if you trust it)", False)


@dataclass
class SpeechGRPORecipe:
    task: Literal["asr", "sqa", "ast"] = doc("asr, sqa (spoken QA) or ast (speech translation: En→Es on the corpus; "
                                             "your data's target language, data.target_language)", "asr")
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: SpeechGRPOConfig = field(default_factory=SpeechGRPOConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    max_questions: int = doc("spoken-QA questions used per utterance", 2, ge=1)
    test_examples: int = doc("held-out test examples evaluated (0: all)", 0, ge=0)
    eval_batch_size: int = doc("decoding batch size for evaluation", 32, ge=1)
    sft_extra: bool = doc("also run the control: SFT continued for RL's wall time (off only in the demo)", True,
                          affects_results=False)
    rl_from_zero_shot: bool = doc(
        "pretrained policies: also train GRPO straight from the zero-shot model (grpo_from_zero_shot) and SFT "
        "from the zero-shot model for the same wall time (sft_equal_time) — IBM's comparison", False,
        affects_results=False)
    controls_beside_rl: bool | None = doc(
        "train each control (sft_extra, sft_equal_time) in a second process while its RL system trains, one "
        "torch thread each, instead of after it; the budget is the same (it stops once it has trained as long "
        "as RL did). None: when this machine has two or more cores and the recipe runs in one process",
        None, affects_results=False)

    def validate(self) -> None:
        """The open-vocabulary corpus speaks plain sentences: it has no questions or translations; the
        corpus's translations are Spanish; a comparison from the zero-shot model needs a pretrained policy."""
        if self.task != "asr" and self.data.source == "corpus" and self.corpus.text == "wordnet":
            raise ConfigError(f"corpus.text: 'wordnet' has no questions or translations for task {self.task!r}; "
                              "use corpus.text: stories (or data: with those columns)")
        if self.task == "ast" and self.data.source == "corpus" and self.data.target_language.strip().lower() != "es":
            raise ConfigError(f"data.target_language: the synthetic corpus's translations are Spanish (es), not "
                              f"{self.data.target_language!r}; set a data source whose rows are in that language")
        if self.rl_from_zero_shot and self.model.policy == "speechlm":
            raise ConfigError("rl_from_zero_shot: needs a pretrained model.policy (the SpeechLM's new parts start "
                              "untrained, so it has no zero-shot model)")


def new_policy(cfg: ModelConfig, seed: int = 0) -> Any:
    """The policy before training: a pretrained speech model as it was published, or our SpeechLM with its
    new parts (the audio front end) initialised from ``seed``, so a rerun of a recipe reproduces its
    numbers."""
    torch.manual_seed(seed)
    if cfg.policy == "speechlm":
        kw = {"encoder": cfg.encoder} if cfg.front_end == "whisper" else {}
        return SpeechLM.create(cfg.lm, front_end=cfg.front_end, decoder_layers=cfg.decoder_layers, **kw)
    from speechrl.models.native import load_policy
    from speechrl.schedule import audio_encoder

    policy = load_policy(cfg.policy, trust_remote_code=cfg.trust_remote_code)
    if cfg.freeze_encoder and (encoder := audio_encoder(policy)) is not None:
        encoder.requires_grad_(False)
    return policy


def continued_sft(cfg: SFTConfig, best_step: int) -> SFTConfig:
    """The control ``sft_extra``: SFT resumed from its best weights for RL's training time
    (:func:`train_control`: that time, not a step count, ends it), at the learning rates its linear
    schedule had reached at ``best_step`` — at least a tenth of the peak, so a run whose best was its
    last step still trains — held there, no warm-up, no early stop. A fresh schedule at the peak rate
    knocks a converged model off its optimum (measured, spoken QA: dev BLEU 32.8 → 0.0 in 50 steps;
    ASR: dev WER 0.41 → 0.49); a decay over SFT's own ``max_steps`` capped the control below RL's time
    (ASR, 2026-12-05: 400 steps in 694 s of GRPO's 1,860)."""
    warm = min(cfg.warmup_steps, cfg.max_steps)
    if best_step < warm:
        reached = best_step / warm
    else:
        reached = (cfg.max_steps - best_step) / max(1, cfg.max_steps - warm)
    scale = min(1.0, max(0.1, reached))
    return SFTConfig(**{**cfg.__dict__, "lr": cfg.lr * scale, "new_lr": cfg.new_lr * scale, "warmup_steps": 0,
                        "schedule": "constant", "max_steps": CONTROL_STEP_CAP, "patience": 0})


CONTROL_STEP_CAP = 1_000_000  # the continued control's steps: in practice RL's time ends it long before


def train_control(recipe: SpeechGRPORecipe, name: str, rl_stage: str, policy: Any, split: dict[str, list],
                  feats: dict, out: Path, logger: MetricsLogger | None) -> dict[str, Any]:
    """Control ``name`` — ``sft_extra`` (SFT continued from its best weights) or ``sft_equal_time`` (SFT
    from the zero-shot model) — trained on ``policy`` (fresh from :func:`new_policy`) into
    ``out / name`` until it has trained as long as RL stage ``rl_stage`` did — read from that stage's
    ``result.json``, so a control trained beside its RL stage goes on until RL has finished."""
    if name == "sft_extra":
        sft = read_json(out / "sft" / "result.json")
        checkpoint.load_weights(out / "sft" / "best" / "model.safetensors", policy)
        cfg = continued_sft(recipe.sft, sft["best_step"])
    else:
        cfg = recipe.sft
    rl_result = out / rl_stage / "result.json"
    return train_sft(policy, split["train"], split["dev"], feats, recipe.task, cfg, out / name, logger, name,
                     budget_s=lambda: read_json(rl_result)["train_s"] if rl_result.is_file() else None)


def _control_process(recipe: SpeechGRPORecipe, name: str, rl_stage: str, out: Path) -> None:
    """A control trained in a process of its own, on one torch thread: the recipe's training and dev data
    (not the test clips: the main process tests it) and a fresh policy from the caches, its result in
    ``out / name`` where the main process then finds it."""
    set_threads(1)
    policy, feats, split, _, _ = prepare(recipe, out, record_rejects=False, splits=("train", "dev"))
    train_control(recipe, name, rl_stage, policy, split, feats, out, MetricsLogger(out, tensorboard=False,
                                                                                   wandb=False))


def controls_beside_rl(recipe: SpeechGRPORecipe) -> bool:
    """Whether the controls train beside their RL stages (the option; by default on ≥ 2 cores, one process)."""
    if recipe.controls_beside_rl is not None:
        return recipe.controls_beside_rl
    return usable_cores() >= 2 and process_state().num_processes == 1


def rl_with_control(recipe: SpeechGRPORecipe, control: str | None, rl_stage: str, out: Path) -> Any:
    """The block that trains RL stage ``rl_stage``: with ``control`` trained beside it in a second process
    when :func:`controls_beside_rl` (its log in ``out / control / log.txt``) and neither has finished yet
    (a resumed run trains what is left in this process), else as it is."""
    if control is None or not controls_beside_rl(recipe) or any(
            (out / stage / "result.json").is_file() for stage in (control, rl_stage)):
        return contextlib.nullcontext()
    print(f"{control}: trains beside {rl_stage} in a second process, progress in {out / control / 'log.txt'}",
          file=sys.stderr)
    return beside(_control_process, (recipe, control, rl_stage, out), out / control / "log.txt")


def _from_zero_shot(recipe: SpeechGRPORecipe, split: dict[str, list], feats: dict, out: Path,
                    logger: MetricsLogger, test_eval: Any) -> dict[str, Any]:
    """IBM's comparison: GRPO straight from the published model against SFT from the same model given
    GRPO's wall time (each selected on dev as the main systems are)."""
    rl_policy = new_policy(recipe.model, recipe.sft.seed)
    rl_train, _ = select_rl_data(split["train"], recipe.selection, recipe.task, rl_policy, feats)
    with rl_with_control(recipe, "sft_equal_time", "grpo_from_zero_shot", out):
        rl = train_grpo(rl_policy, rl_train, split["dev"], feats, recipe.task, recipe.grpo,
                        out / "grpo_from_zero_shot", logger, "grpo_from_zero_shot")
        test_eval("grpo_from_zero_shot", rl_policy)
    del rl_policy
    sft_policy = new_policy(recipe.model, recipe.sft.seed)
    sft = train_control(recipe, "sft_equal_time", "grpo_from_zero_shot", sft_policy, split, feats, out, logger)
    test_eval("sft_equal_time", sft_policy)
    return {"grpo_from_zero_shot": rl, "sft_equal_time": sft}


def stages(recipe: SpeechGRPORecipe) -> list[tuple[str, str, str | None]]:
    """The stages :func:`run` caches in its folder, in order: (name, the file that marks it done, the key
    that file must hold or None) — for ``speechrl run --dry-run``."""
    rl = "mpgrpo" if recipe.grpo.mixed_policy else "grpo"
    systems = ["zero_shot"] if recipe.model.policy != "speechlm" else []
    systems += ["sft", rl] + (["sft_extra"] if recipe.sft_extra else [])
    if recipe.rl_from_zero_shot:
        systems += ["grpo_from_zero_shot", "sft_equal_time"]
    trained = [(s, f"{s}/result.json", None) for s in systems if s != "zero_shot"]
    return trained + [(f"test {s}", "metrics_test.json", s) for s in systems]


def prepare(recipe: SpeechGRPORecipe, out: Path, record_rejects: bool = True,
            splits: tuple[str, ...] = ("train", "dev", "test")
            ) -> tuple[Any, dict, dict[str, list], list[dict], dict[str, Any]]:
    """The recipe's data and its untrained policy: (policy, features, train/dev/test examples, the rows
    kept, the data report; skipped rows in ``<out>/rejected.jsonl`` when ``record_rejects``). Only the
    rows of ``splits`` are kept and featurized (the others' examples are empty)."""
    rejects = out if record_rejects else None
    corpus_dir, rows, data_report = dataset_rows(recipe.data, recipe.corpus, recipe.task, rejects)
    rows = [r for r in rows if r["split"] in splits]
    policy = new_policy(recipe.model, recipe.sft.seed)
    feats = policy_features(corpus_dir, rows, policy)
    rows = kept_with_features(rows, feats, corpus_dir, rejects, data_report)
    split = {s: task_examples([r for r in rows if r["split"] == s], recipe.task, recipe.max_questions)
             for s in ("train", "dev", "test")}
    return policy, feats, split, rows, data_report


def run(recipe: SpeechGRPORecipe, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    start = time.time()
    logger = MetricsLogger(out)
    policy, feats, split, rows, data_report = prepare(recipe, out)
    data_report["prepare_s"] = round(time.time() - start, 1)  # corpus, features, encoder outputs (cached or not)
    test = split["test"][: recipe.test_examples or None]
    max_new = recipe.grpo.max_new_tokens
    rl_name = "mpgrpo" if recipe.grpo.mixed_policy else "grpo"
    results: dict[str, Any] = read_json(out / "metrics_test.json") if (out / "metrics_test.json").is_file() else {}
    items: dict[str, Any] = read_json(out / "items_test.json") if (out / "items_test.json").is_file() else {}

    def test_eval(name: str, policy: Any) -> None:
        if name in results:
            return
        t0 = time.time()
        metrics, hyps = evaluate(policy, test, feats, recipe.task, max_new, recipe.eval_batch_size, desc=f"test {name}")
        metrics["eval_s"] = round(time.time() - t0, 1)
        items[name] = task_item_stats(recipe.task, hyps, scoring_references(test), [e.language for e in test])
        write_json(out / "items_test.json", items)  # before the metrics: a cached result always has its items
        results[name] = metrics
        write_json(out / "metrics_test.json", results)
        write_samples(out / "samples" / f"{name}.jsonl", test, hyps)
        logger.log({f"test_{k}": v for k, v in metrics.items()}, stage=name)

    training: dict[str, Any] = {}
    if recipe.model.policy != "speechlm":  # a pretrained policy: where it starts from
        test_eval("zero_shot", policy)
        training["zero_shot"] = {"train_s": 0.0}

    # SFT baseline, trained to its best dev score
    sft = train_sft(policy, split["train"], split["dev"], feats, recipe.task, recipe.sft, out / "sft", logger)
    test_eval("sft", policy)

    # RL from the SFT model, on the selected RL data (its control beside it, or after it)
    rl_train, selection = select_rl_data(split["train"], recipe.selection, recipe.task, policy, feats)
    write_json(out / "rl_selection.json", selection)
    with rl_with_control(recipe, "sft_extra" if recipe.sft_extra else None, rl_name, out):
        rl = train_grpo(policy, rl_train, split["dev"], feats, recipe.task, recipe.grpo, out / rl_name, logger,
                        rl_name)
        test_eval(rl_name, policy)
    del policy

    training.update({"sft": sft, rl_name: rl})
    if recipe.sft_extra:
        extra = new_policy(recipe.model, recipe.sft.seed)
        training["sft_extra"] = train_control(recipe, "sft_extra", rl_name, extra, split, feats, out, logger)
        test_eval("sft_extra", extra)

    if recipe.rl_from_zero_shot:
        training.update(_from_zero_shot(recipe, split, feats, out, logger, test_eval))

    summary = {"task": recipe.task, "test_size": len(test), "wall_s": round(time.time() - start, 1),
               "metrics": {k: results[k] for k in training}, "baseline": "sft",
               "intervals": intervals(items, "sft", list(training)),
               "controls": {f"{system} vs {control}": found[system]
                            for system, control in ((rl_name, "sft_extra"), ("grpo_from_zero_shot", "sft_equal_time"))
                            if (found := intervals(items, control, [system])).get(system)},
               "training": training, "rl_selection": selection,
               "data": data_report, "fingerprints": {
                   # the synthetic corpus's audio is hashed; a user source is fingerprinted in run.json
                   **({"corpus": fingerprint.of_corpus(rows)} if recipe.data.source == "corpus" else {}),
                   "features": fingerprint.of_features(feats), "rl_data": fingerprint.of_json([e.id for e in rl_train]),
                   **fingerprint.of_stages(out, [s for s in training if s != "zero_shot"]),
                   **{f"test {s}": fingerprint.of_jsonl(out / "samples" / f"{s}.jsonl", drop=("audio",))
                      for s in training if (out / "samples" / f"{s}.jsonl").is_file()}}}
    write_json(out / "summary.json", summary)
    return summary
