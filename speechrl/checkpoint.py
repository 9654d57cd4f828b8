"""Resumable, atomic training checkpoints — safetensors and JSON only, no pickles.

A checkpoint is a folder ``<run>/checkpoints/step-0000012/`` holding

* ``model.safetensors``      — the trainable parameters (the frozen rest is rebuilt from the recipe),
* ``optimizer.safetensors``  — every tensor of the optimizer state, ``optimizer.json`` the rest,
* ``rng.safetensors``        — torch CPU (and CUDA) generator states,
* ``state.json``             — step, data position, scheduler, Python/NumPy RNG and trainer state
  (curriculum round and thresholds, reward normaliser …).

It is written into a hidden temp folder and renamed into place, so a folder under ``checkpoints/``
is always complete; older ones are pruned only after the new one exists. ``latest(run)`` finds the
newest complete checkpoint. A write that fails (a full disk) raises :class:`CheckpointError` naming
the checkpoint and leaves the previous ones untouched; the temp folder of a writer that was killed is
removed by the next save.

Under a multi-process launch (``RANK`` set) only rank 0 writes — the DDP replicas are identical — and
every rank reads; trainers wait for all ranks before reloading what rank 0 wrote.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(OSError):
    """A checkpoint that could not be written or read; ``str(err)`` names it and the reason, and
    ``errno`` is the cause's (e.g. ``errno.ENOSPC`` for a full disk)."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.errno = getattr(cause, "errno", None)


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()
    py = random.getstate()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                                    for x in np_state[2:]]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if states:
            torch.cuda.set_rng_state_all(states)
    v, st, g = meta["python"]
    random.setstate((v, tuple(st), g))
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-1 of a module's pretrained weights (names and values; peft LoRA weights left out, wrapped
    layers named as before wrapping): what a cache of a frozen module's outputs is keyed by."""
    import hashlib

    digest = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.replace(".base_layer.", ".").encode())
            digest.update(t.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _writer() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def save_weights(path: str | Path, model: torch.nn.Module) -> Path:
    """The trainable parameters alone, written atomically (e.g. the best-on-dev weights); rank 0 only."""
    if not _writer():
        return Path(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(trainable_state(model), str(tmp))
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)  # the previous file at ``path`` stays intact
        if isinstance(err, (OSError, SafetensorError)):
            raise CheckpointError(f"{path}: could not write weights ({err}); the previous file "
                                  "is unchanged", err) from err
        raise
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:  # SafetensorError: a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})", err) from err


def load_weights(path: str | Path, model: torch.nn.Module) -> None:
    """Copy saved parameters into ``model`` by name; a name the model lacks is an error."""
    weights = _read_safetensors(Path(path))
    params = dict(model.named_parameters())
    missing = [k for k in weights if k not in params]
    if missing:
        raise ValueError(f"{path}: saved parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v.to(params[k].device))


def save(run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
         scheduler: Any = None, state: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically; keep the ``keep`` newest. Rank 0 only."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:07d}"
    if not _writer():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".step-{step:07d}.tmp"
    for stale in root.glob(".step-*.tmp"):  # left by a writer that was killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        meta: dict[str, Any] = {"step": step, "state": state or {}}
        if optimizer is not None:
            tensors, opt_meta = _optimizer_split(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        if scheduler is not None:
            meta["scheduler"] = scheduler.state_dict()
        rng_tensors, meta["rng"] = rng_state()
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():  # durable before it becomes visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint stays intact
        if isinstance(err, (OSError, SafetensorError)) and not isinstance(err, CheckpointError):
            raise CheckpointError(f"{final}: could not write the checkpoint ({err}); the latest "
                                  f"complete one is still {latest(run_dir)}", err) from err
        raise
    for old in complete(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def complete(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and (p / "state.json").is_file())


def latest(run_dir: str | Path) -> Path | None:
    found = complete(run_dir)
    return found[-1] if found else None


def load(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
         scheduler: Any = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore a checkpoint into ``model``/``optimizer``/``scheduler``; returns ``{"step", "state"}``."""
    path = Path(path)
    load_weights(path / "model.safetensors", model)
    meta = json.loads((path / "state.json").read_text())
    if optimizer is not None and (path / "optimizer.safetensors").is_file():
        opt_meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(_optimizer_join(_read_safetensors(path / "optimizer.safetensors"), opt_meta))
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        set_rng_state(_read_safetensors(path / "rng.safetensors"), meta["rng"])
    return {"step": meta["step"], "state": meta["state"]}
