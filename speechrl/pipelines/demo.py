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

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from speechrl import config as C
from speechrl.eval.metrics import TASK_METRIC, lower_is_better
from speechrl.parallel import output_to, usable_cores
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
         # the judge set (unseen dev texts no choice reads) is the full recipe's: ≈ 25 s more here
         "test_examples": 48, "samples": 8, "judge_set": False},
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


def default_jobs(families: int) -> int:
    """How many families run at once when the user names no ``--jobs``: all of them on a machine with at
    least two cores, one at a time on one core. Each family's work is mostly single-threaded (speech
    synthesis, the vocoder, CTranslate2 Whisper, the judge, Python loops between small matmuls), so
    families side by side at one thread each use the cores that one family leaves idle (measured on
    2 cores, 2026-12-04: one after another at one thread each, 26 min; side by side, README)."""
    return families if usable_cores() >= 2 else 1


def _run_family(name: str, overrides: list[str] | tuple[str, ...], out: Path, resume_anyway: bool,
                threads: int | None, log: Path | None) -> tuple[dict[str, Any], float]:
    """One family's recipe into ``out / name``: (its summary, its wall time). With ``log``, this process's
    output (progress bars, warnings) goes to that file: families running side by side would interleave."""
    if log is not None:
        output_to(log)
    pipeline, recipe = recipe_for(name, overrides)
    t0 = time.time()
    result = run_recipe(pipeline, recipe, out / name, resume_anyway, threads)
    return result, time.time() - t0


def run(out: str | Path, families: list[str] | None = None, overrides: list[str] | tuple[str, ...] = (),
        resume_anyway: bool = False, threads: int | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run the demo families (all by default) into ``out`` with torch's ``threads`` (None: as they are),
    ``jobs`` of them at a time, each in its own process (progress in ``out/<family>/log.txt``; results
    do not depend on it: every stage is deterministic for its seed whatever the threads and the load);
    returns the top-level summary. A family's folder from a run of other settings stops the demo before
    any work (``resume_anyway``: reuse it anyway, recorded; :mod:`speechrl.runfolder`)."""
    out = Path(out)
    names = families or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise C.ConfigError(f"unknown demo recipe(s) {unknown}; choose from {sorted(FAMILIES)}")
    if jobs < 1:
        raise C.ConfigError(f"--jobs: {jobs} is out of range; must be >= 1")
    start = time.time()
    summary: dict[str, Any] = {"metrics": {}, "intervals": {}, "headline": {}, "wall_s": {}}
    recipes = {name: recipe_for(name, overrides) for name in names}  # every config error before any work
    for name, (pipeline, recipe) in recipes.items():
        check_reuse(out / name, pipeline, recipe, resume_anyway, warn=False)  # run_recipe warns
    jobs = min(jobs, len(names))
    if jobs == 1:
        done = {name: _run_family(name, overrides, out, resume_anyway, threads, None) for name in names}
    else:
        done = _side_by_side(names, overrides, out, resume_anyway, threads, jobs)
    for name in names:
        result, wall = done[name]
        summary["metrics"][name] = result["metrics"]
        summary["intervals"][name] = result.get("intervals", {})
        summary["headline"][name] = headline(family_for(name, recipes[name][1]), result["metrics"],
                                             result.get("intervals"))
        summary["wall_s"][name] = round(wall, 1)
    summary["wall_s"]["total"] = round(time.time() - start, 1)
    write_json(out / "summary.json", summary)
    return summary


def _side_by_side(names: list[str], overrides: list[str] | tuple[str, ...], out: Path, resume_anyway: bool,
                  threads: int | None, jobs: int) -> dict[str, tuple[dict[str, Any], float]]:
    """The families in ``jobs`` processes (spawned: no forked torch state), one torch thread each unless
    ``threads`` says otherwise; every family runs to its end even if another fails, then the first
    failure is raised naming its family and log."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    logs = {name: out / name / "log.txt" for name in names}
    print(f"demo: {', '.join(names)} — {jobs} at a time, progress in {out}/<family>/log.txt", file=sys.stderr)
    done, failed = {}, {}
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_family, name, overrides, out, resume_anyway, threads or 1, logs[name]): name
                   for name in names}
        for future in as_completed(futures):
            name = futures[future]
            try:
                done[name] = future.result()
                print(f"demo: {name} done in {done[name][1]:.0f} s", file=sys.stderr)
            except Exception as err:  # noqa: BLE001 — reported below, after the other families finish
                failed[name] = err
                print(f"demo: {name} FAILED ({type(err).__name__}: {err}); log: {logs[name]}", file=sys.stderr)
    if failed:
        name, err = next(iter(failed.items()))
        raise RuntimeError(f"demo family {name} failed (log: {logs[name]}): {err}") from err
    return done


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
