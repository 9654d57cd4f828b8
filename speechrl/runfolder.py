"""A run folder's record, and whether a rerun may reuse what the folder holds.

Every stage of a run caches its result in ``--out``, so a rerun continues where the last one stopped.
That is right only when the rerun asks for the results the folder holds. Before a recipe runs into a
folder, :func:`check_reuse` compares its resolved config with the folder's ``config.yaml`` (written by
the run that produced the folder's results) and its inputs with ``run.json``:

- the same settings: the stages are reused;
- other settings (another recipe, task, reward, …): a :class:`~speechrl.config.ConfigError` that names
  every differing key (``key: old → new``) and offers a fresh ``--out`` or ``--resume-anyway``. With
  ``--resume-anyway`` the run goes on, and ``run.json`` (and the summary) list the changed keys under
  ``resumed_with_changes``: the folder then holds results of mixed settings, never silently;
- keys declared ``affects_results=False`` (:func:`speechrl.config.doc`: how often a checkpoint is
  written, worker processes, which systems a run trains or evaluates) may change freely;
- a key the folder's ``config.yaml`` does not have (added to the code since) counts as unchanged when
  the new value is its default; a key only the old config has (removed from the code) is ignored;
- another code version (speechrl version, git commit) alone is a warning on stderr, not an error:
  resuming after an upgrade is legitimate, and the folder's cached stages keep the old code's results.
  ``run.json`` keeps every code version that wrote into the folder.

``run.json``: ``pipeline``, ``code`` (``{"speechrl", "commit"}``; commit None outside a git checkout),
``earlier_code`` (earlier versions that wrote here), ``threads`` (torch's intra-op threads),
``inputs`` (``{"data": data_key}`` for a user data source: its files' sizes and times) and
``resumed_with_changes`` (``[{"key", "old", "new", "time"}]``).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import speechrl
from speechrl import config as C
from speechrl.runlog import read_json, redact_secrets, write_json

MISSING = "(absent)"  # how a key the old config lacks is shown
SHOWN = 8  # differing keys named in the error (then "and N more")


def code_version() -> dict[str, str | None]:
    """``{"speechrl": version, "commit": the git commit of the checkout it runs from, or None}``."""
    try:
        commit = subprocess.run(["git", "-C", str(Path(speechrl.__file__).parent), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"speechrl": speechrl.__version__, "commit": commit}


def resolved_config(pipeline: str, recipe: Any) -> dict[str, Any]:
    """What ``config.yaml`` holds: the ``pipeline`` and the resolved recipe (secrets redacted), so the
    file is a recipe that reruns the run (``speechrl run DIR/config.yaml``)."""
    return {"pipeline": pipeline, **redact_secrets(C.to_dict(recipe))}


def read_config(folder: str | Path, cls: type, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The recipe ``cls`` a run folder's ``config.yaml`` holds (``key=value`` overrides on top), checked like
    any config; its ``pipeline`` key (absent in folders written before it was recorded) is dropped."""
    data = C.read_yaml(Path(folder) / "config.yaml")
    data.pop("pipeline", None)
    return C.load(cls, None, overrides, base=data)


def _plain(value: Any) -> Any:
    """As YAML gives it back (tuples → lists), so a written and a fresh config compare equal."""
    return yaml.safe_load(yaml.safe_dump(value))


def _leaves(obj: Any, default: Any, prefix: str = ""):
    """(dotted key, value, its default, affects_results) of every non-dataclass field of ``obj``; a
    mapping (``grpo.rewards``) is one value."""
    for f in dataclasses.fields(obj):
        value, dflt = getattr(obj, f.name), getattr(default, f.name, None)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, dflt, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value, dflt, f.metadata.get("affects_results", True)


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def _show(value: Any) -> str:
    return MISSING if value is MISSING else repr(value)


def config_changes(old: dict[str, Any], pipeline: str, recipe: Any) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose value in ``recipe`` differs from the folder's old config
    ``old`` and that can change results (module docstring)."""
    changes = []
    old_pipeline = old.get("pipeline", pipeline)  # configs written before the pipeline was recorded
    if old_pipeline != pipeline:
        changes.append(("pipeline", old_pipeline, pipeline))
    try:
        defaults = type(recipe)()
    except TypeError:
        defaults = None
    secret = redact_secrets(C.to_dict(recipe))
    for key, value, default, affects in _leaves(recipe, defaults):
        if not affects:
            continue
        new = _plain(_lookup(secret, key))
        before = _lookup(old, key)
        if before == MISSING and new == _plain(C.to_dict(default)):
            continue  # a key added to the code since, at its default
        if before != new:
            changes.append((key, before, new))
    return changes


def _inputs(recipe: Any) -> dict[str, str]:
    """Fingerprints of the inputs a recipe's config does not pin: a user data source's files."""
    data = getattr(recipe, "data", None)
    if data is None or data.source == "corpus":
        return {}
    from speechrl.data.sources import data_key

    return {"data": data_key(data)}


def check_reuse(out: str | Path, pipeline: str, recipe: Any, resume_anyway: bool = False, warn: bool = True
                ) -> list[dict[str, Any]]:
    """Raise :class:`~speechrl.config.ConfigError` if ``out`` holds results of other settings or inputs
    (unless ``resume_anyway``); warn (``warn``) on another code version. Returns the changes accepted
    (empty when the folder is new or its settings are the same). Writes nothing."""
    out = Path(out)
    record = read_json(out / "run.json") if (out / "run.json").is_file() else {}
    changes = []
    if (out / "config.yaml").is_file():
        changes = config_changes(C.read_yaml(out / "config.yaml"), pipeline, recipe)
    old_inputs, new_inputs = record.get("inputs", {}), _inputs(recipe)
    changes += [(f"inputs.{k}", old_inputs[k], v) for k, v in new_inputs.items()
                if k in old_inputs and old_inputs[k] != v]
    if changes and not resume_anyway:
        shown = ", ".join(f"{k}: {_show(old)} → {_show(new)}" for k, old, new in changes[:SHOWN])
        more = f" (and {len(changes) - SHOWN} more)" if len(changes) > SHOWN else ""
        raise C.ConfigError(f"{out} holds results of other settings ({shown}{more}); run into a fresh --out, "
                            "or pass --resume-anyway to reuse its stages anyway (recorded in run.json)")
    code = code_version() if warn else None
    if warn and record.get("code") and record["code"] != code:
        print(f"speechrl: warning: {out} was written by speechrl {record['code']} and is resumed by {code}: "
              "its finished stages keep the results of that code", file=sys.stderr)
    return [{"key": k, "old": old, "new": new} for k, old, new in changes]


def write_record(out: str | Path, pipeline: str, recipe: Any, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``config.yaml`` (the resolved recipe) and ``run.json`` (module docstring) into ``out``, keeping
    the folder's earlier code versions and accepted changes; returns the record."""
    import torch

    out = Path(out)
    old = read_json(out / "run.json") if (out / "run.json").is_file() else {}
    code = code_version()
    earlier = [c for c in old.get("earlier_code", []) + [old.get("code")] if c and c != code]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record = {"pipeline": pipeline, "code": code, "earlier_code": list({str(c): c for c in earlier}.values()),
              "threads": torch.get_num_threads(), "inputs": _inputs(recipe),
              "resumed_with_changes": old.get("resumed_with_changes", []) + [{**c, "time": stamp} for c in changes]}
    C.save(resolved_config(pipeline, recipe), out / "config.yaml")
    write_json(out / "run.json", record)
    return record
