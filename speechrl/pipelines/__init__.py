"""The recipes a user runs, and the one way a recipe runs into a folder.

A recipe names its ``pipeline``; :data:`PIPELINES` maps that name to the pipeline's module, whose
recipe config class is named here and whose ``run(recipe, out)`` writes ``out/summary.json``. Both
``speechrl run`` and ``speechrl demo`` go through :func:`run_recipe`. Modules are imported only when a
recipe of theirs is loaded, so the command line starts without importing torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from speechrl import config as C

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


def run_recipe(pipeline: str, recipe: Any, out: str | Path) -> dict[str, Any]:
    """Run ``recipe`` into ``out``: ``config.yaml`` (the resolved recipe), then the pipeline, which writes
    its metrics, samples and ``summary.json``; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    C.save(recipe, out / "config.yaml")
    return pipeline_module(pipeline).run(recipe, out)
