"""The main job: every recipe family at demo scale, end to end, one summary and one report.

    speechrl demo --out DIR [--recipe NAME]

Each family runs its own pipeline into ``DIR/<family>/`` (config, metrics, samples, summary), all on
one shared corpus (built once, cached). ``DIR/summary.json`` holds ``metrics`` per family (held-out
baseline and aligned systems), their ``intervals`` per family (each system's paired bootstrap 95%
interval of its difference to the baseline, as the family's summary has them) and a ``headline`` per
family (one metric, before → after, with that interval: a change whose interval holds 0 is printed as
"no significant change");
``DIR/report.html`` shows them all. Every stage is cached, so a second run reuses the corpus and the
trained models and only recomputes what is missing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from speechrl import config as C
from speechrl.eval.metrics import TASK_METRIC, lower_is_better
from speechrl.pipelines import load_recipe, run_recipe
from speechrl.runfolder import check_reuse
from speechrl.runlog import write_json

# one corpus for the families that do not bring their own (same config → same cache folder); its ASR
# quality check (Whisper WER of the test split, ≈ 40 s) belongs to `speechrl corpus build` and the recipes
DEMO_CORPUS = {"size": 600, "seed": 1, "evaluate": False}


@dataclass(frozen=True)
class Family:
    pipeline: str  # a key of speechrl.pipelines.PIPELINES
    settings: dict[str, Any]  # demo-scale overrides of the pipeline's recipe config
    baseline: str  # the system the headline compares against
    final: str  # the aligned system
    metric: str  # the headline held-out metric
    note: str = ""  # what a reader must know to read the headline (printed with it)

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.metric)


FAMILIES: dict[str, Family] = {
    "speech_grpo": Family(
        "speech_grpo",
        # recipes/asr_grpo.yaml at demo scale: Whisper tiny.en on open-vocabulary speech (WordNet sentences)
        {"task": "asr",
         "corpus": {"text": "wordnet", "size": 240, "seed": 1, "evaluate": False, "test_fraction": 0.4,
                    "voices": ["espeak-us-m6", "espeak-us-m1", "espeak-gb-m6", "espeak-us-f2", "piper-joe"],
                    "test_voice": "espeak-us-klatt4"},
         "model": {"policy": "whisper-tiny.en"},
         "sft": {"lr": 1e-5, "batch_size": 8, "max_steps": 60, "warmup_steps": 5, "eval_every": 20,
                 "dev_examples": 24, "checkpoint_every": 20},
         "grpo": {"rewards": {"accuracy_wer": 1.0, "hallucination": 1.0, "keyword_score": 0.5}, "max_steps": 8,
                  "lr": 5e-5, "beta": 0.02, "temperature": 1.0, "max_new_tokens": 36, "eval_every": 4,
                  "dev_examples": 24},
         "sft_extra": False},
        "sft", "grpo", "wer",
        "demo scale: 120 training utterances, SFT stopped at 60 steps, 8 GRPO steps; the recipe trains SFT to "
        "its best dev WER and compares GRPO with SFT given RL's time (README, Results)"),
    "align_slm": Family(
        "align_slm",
        {"pretrain": {"max_steps": 120, "eval_every": 40, "checkpoint_every": 40},
         "curriculum": {"prompts_per_round": 40, "thresholds": "quantile", "chosen_min": [0.7, 0.8],
                        "rejected_max": [0.3, 0.4]},
         "sampling": {"max_new_units": 40, "n": 4},
         # chosen on dev prompts (eval_split=dev, 40 × 2; base 2.028): plain DPO, 5 continuations per prompt →
         # judge 2.094; with the chosen-NLL term (nll_weight 1.0) → 2.398 but auto-BLEU 0.015 → 0.076; with it
         # and 4 continuations → 2.253, auto-BLEU 0.018, 40 s faster (kept); 60 prompts × 4 → 2.286, 50 s slower
         "dpo": {"epochs": 6.0, "batch_size": 8, "lr": 1e-3, "eval_every": 4, "nll_weight": 1.0},
         "benchmarks": {"pairs": 60},
         "test_prompts": 40, "eval_continuations": 2, "samples": 8,
         # the continued-NTP control and round 1's evaluation belong to the full recipe (recipes/align_slm.yaml)
         "control": False, "eval_all_rounds": False},
        "base", "round2", "judge_score"),
    "tts_rl": Family(
        "tts_rl",
        {"corpus": {"size": 500, "voices": ["hibari"], "test_voice": "piper-joe", "voices_per_sentence": 1,
                    "evaluate": False},
         # 200 SFT steps left the TTS LM at test WER 0.97 (dev NLL 1.76); 400: 0.65 (1.53), 50 s more
         "sft": {"max_steps": 400}, "token2text": {"max_steps": 150},
         # GRPO with the recipe's RL settings (chosen on dev at demo scale first: 0.536 → 0.520); the demo runs
         # GRPO, the recipe compares all four systems
         "systems": ["grpo"],
         "test_examples": 48, "samples": 8},
        "sft", "grpo", "wer",
        "GRPO's step is picked on a few dev texts; at recipe scale such gains did not hold on 83 further "
        "unseen dev texts (README, Results): read this as selection noise, not an RL gain"),
}


def family_for(name: str, recipe: Any) -> Family:
    """Family ``name`` as run with ``recipe``: a speech-GRPO demo switched to another task
    (``--set task=sqa``) is judged on that task's metric (BLEU), not on WER."""
    family, task = FAMILIES[name], getattr(recipe, "task", None)
    if task in TASK_METRIC and TASK_METRIC[task] != family.metric:
        return replace(family, metric=TASK_METRIC[task], note="")
    return family


def headline(family: Family, metrics: dict[str, dict[str, float]],
             intervals: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Baseline → aligned system on the family's metric, with the run's paired bootstrap ``interval`` of
    the difference when its summary has one (``{"diff", "low", "high", "significant"}``). When ``--set``
    left the family's aligned system out, the last system the run has stands in (named in the result)."""
    final = family.final if family.final in metrics else [k for k in metrics if k != family.baseline][-1]
    before, after = metrics[family.baseline][family.metric], metrics[final][family.metric]
    improved = after < before if family.lower_is_better else after > before
    interval = (intervals or {}).get(final, {}).get(family.metric)
    return {"metric": family.metric, family.baseline: before, final: after, "improved": improved,
            **({"interval": interval} if interval else {}), **({"note": family.note} if family.note else {})}


def recipe_for(name: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[str, Any]:
    """The demo-scale recipe config of family ``name`` (typed, validated like a YAML recipe), with
    ``key=value`` overrides on top (e.g. ``corpus.size=300``)."""
    family = FAMILIES[name]
    data = {"corpus": dict(DEMO_CORPUS), **family.settings}
    return family.pipeline, load_recipe(family.pipeline, data, overrides)


def run(out: str | Path, families: list[str] | None = None, overrides: list[str] | tuple[str, ...] = (),
        resume_anyway: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Run the demo families (all by default) into ``out`` with torch's ``threads`` (None: as they are);
    returns the top-level summary. A family's folder from a run of other settings stops the demo before
    any work (``resume_anyway``: reuse it anyway, recorded; :mod:`speechrl.runfolder`)."""
    out = Path(out)
    names = families or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise C.ConfigError(f"unknown demo recipe(s) {unknown}; choose from {sorted(FAMILIES)}")
    start = time.time()
    summary: dict[str, Any] = {"metrics": {}, "intervals": {}, "headline": {}, "wall_s": {}}
    recipes = {name: recipe_for(name, overrides) for name in names}  # every config error before any work
    for name, (pipeline, recipe) in recipes.items():
        check_reuse(out / name, pipeline, recipe, resume_anyway, warn=False)  # run_recipe warns
    for name in names:
        pipeline, recipe = recipes[name]
        t0 = time.time()
        result = run_recipe(pipeline, recipe, out / name, resume_anyway, threads)
        summary["metrics"][name] = result["metrics"]
        summary["intervals"][name] = result.get("intervals", {})
        summary["headline"][name] = headline(family_for(name, recipe), result["metrics"], result.get("intervals"))
        summary["wall_s"][name] = round(time.time() - t0, 1)
    summary["wall_s"]["total"] = round(time.time() - start, 1)
    write_json(out / "summary.json", summary)
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The plain-text lines printed at the end of a demo: held-out metric before → after per family, the
    change with its paired bootstrap 95% interval, "no significant change" when that interval holds 0."""
    lines = ["speechrl demo — held-out test metrics"]
    for name, h in summary["headline"].items():
        family = FAMILIES[name]
        arrow = "↓" if lower_is_better(h["metric"]) else "↑"
        verdict = "improved" if h["improved"] else "NOT improved"
        ci, change = h.get("interval"), ""
        if ci:
            change = f"  Δ {ci['diff']:+.4f}, 95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]"
            verdict = verdict if ci["significant"] else "no significant change"
        final = next(k for k in h  # as headline() chose
                     if k not in ("metric", family.baseline, "improved", "interval", "note"))
        lines.append(f"  {name:<12} {h['metric']} {arrow}  {family.baseline} {h[family.baseline]:.4f} → "
                     f"{final} {h[final]:.4f}{change}  ({verdict}; {summary['wall_s'][name]:.0f} s)")
        if h.get("note"):
            lines.append(f"  {'':<12} note: {h['note']}")
    lines.append(f"  total {summary['wall_s']['total']:.0f} s")
    return "\n".join(lines)
