"""The recipes a user runs, and the one way a recipe runs into a folder.

A recipe names its ``pipeline``; :data:`PIPELINES` maps that name to the pipeline's module, whose
recipe config class is named here, whose ``run(recipe, out)`` writes ``out/summary.json`` and whose
``stages(recipe)`` names the files that mark each stage done (for ``--dry-run``). Both ``speechrl run``
and ``speechrl demo`` go through :func:`run_recipe`, which reuses a folder's results only for the
settings that produced them (:mod:`speechrl.runfolder`). Modules are imported only when a recipe of
theirs is loaded, so the command line starts without importing torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from speechrl import config as C
from speechrl import runfolder
from speechrl.runlog import read_json, write_json

# pipeline name → (module, its recipe config class)
PIPELINES: dict[str, tuple[str, str]] = {
    "speech_grpo": ("speechrl.pipelines.speech_grpo", "SpeechGRPORecipe"),
    "align_slm": ("speechrl.pipelines.align_slm", "AlignSLMRecipe"),
    "tts_rl": ("speechrl.pipelines.tts_rl", "TTSRLRecipe"),
}


def pipeline_module(pipeline: str) -> ModuleType:
    """The module of ``pipeline``; its ``run(recipe, out)`` runs a recipe."""
    if pipeline not in PIPELINES:
        raise C.ConfigError(f"'pipeline' must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    return importlib.import_module(PIPELINES[pipeline][0])


def recipe_class(pipeline: str) -> type:
    """The typed recipe config class of ``pipeline``."""
    return getattr(pipeline_module(pipeline), PIPELINES[pipeline][1])


def load_recipe(pipeline: str, base: dict[str, Any] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """``pipeline``'s recipe config from ``base`` keys with ``key=value`` overrides on top (validated)."""
    return C.load(recipe_class(pipeline), None, overrides, base=base)


def read_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[str, Any]:
    """A recipe YAML names its ``pipeline``; the rest are that pipeline's typed config keys."""
    data = C.read_yaml(path)
    pipeline = data.pop("pipeline", None)
    if pipeline not in PIPELINES:
        raise C.ConfigError(f"{path}: 'pipeline' must be one of {sorted(PIPELINES)}, got {pipeline!r}")
    return pipeline, load_recipe(pipeline, data, overrides)


def run_recipe(pipeline: str, recipe: Any, out: str | Path, resume_anyway: bool = False,
               threads: int | None = None) -> dict[str, Any]:
    """Run ``recipe`` into ``out``: check that the folder's results (if any) come from the same settings
    (:func:`speechrl.runfolder.check_reuse`; ``resume_anyway`` accepts other settings and records them),
    set torch's ``threads`` (None: as they are), write ``config.yaml`` (the resolved recipe) and
    ``run.json``, then the pipeline, which writes its metrics, samples and ``summary.json``; returns the
    summary."""
    out = Path(out)
    changes = runfolder.check_reuse(out, pipeline, recipe, resume_anyway)
    if threads is not None:
        from speechrl.parallel import set_threads

        set_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    record = runfolder.write_record(out, pipeline, recipe, changes)
    summary = pipeline_module(pipeline).run(recipe, out)
    if record["resumed_with_changes"]:  # the summary says it holds results of mixed settings
        summary["resumed_with_changes"] = record["resumed_with_changes"]
        write_json(out / "summary.json", summary)
    return summary


def dry_run(pipeline: str, recipe: Any, out: str | Path, resume_anyway: bool = False) -> str:
    """What :func:`run_recipe` would do, without doing it: the resolved config (as ``config.yaml`` would
    hold it), whether ``out`` may be reused, and each stage: ``reuse`` (its result is in ``out``) or
    ``run``."""
    import yaml

    out = Path(out)
    try:
        changes = runfolder.check_reuse(out, pipeline, recipe, resume_anyway)
        if not (out / "config.yaml").is_file():
            verdict = "a new run folder"
        elif changes:
            verdict = f"resumed anyway with other settings: {[c['key'] for c in changes]}"
        else:
            verdict = "the same settings: finished stages are reused"
    except C.ConfigError as err:
        verdict = f"would stop: {err}"
    lines = ["# resolved config (config.yaml)",
             yaml.safe_dump(runfolder.resolved_config(pipeline, recipe), sort_keys=False).rstrip(),
             f"# {out}: {verdict}", "# stages"]
    for name, marker, key in pipeline_module(pipeline).stages(recipe):
        path = out / marker
        done = path.is_file() and (key is None or key in read_json(path))
        lines.append(f"{'reuse' if done else 'run':<6} {name:<24} ({marker}{f': {key}' if key else ''})")
    return "\n".join(lines)
