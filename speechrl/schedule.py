"""The time-shared schedule (Tongyi, arXiv 2509.18569): the stages of an RL step take the accelerator in turn.

    encode (audio encoder; features for the batch, then freed) → rollout (policy samples G per prompt)
    → reward → reference (frozen reference's log-probs) → update (policy + optimizer state)

With ``offload`` the parts a stage does not use wait in CPU memory while it runs:

============  ==========================================================================
part          on the accelerator during
============  ==========================================================================
``encoder``   ``encode`` and ``evaluate`` (the frozen audio encoder; later stages reuse its output)
``reference`` ``reference`` (a full frozen copy — only without LoRA; with LoRA the reference is the
              policy with its adapter switched off and costs nothing)
``optimizer`` ``update`` (AdamW's moment tensors)
============  ==========================================================================

The policy's LM stays put: rollout, reference and update all need it, so moving it in and out would
cost more transfer than it saves memory. Rewards run on CPU or behind the reward service
(:mod:`speechrl.rewards.service`), so they hold no accelerator memory here. Under several processes
DDP binds the policy's parameters to their device, so only the reference and the optimizer state
move there. Parameters move by ``param.data`` (the optimizer keeps its references).

Each stage records its peak accelerator memory (``torch.cuda.max_memory_allocated`` since the stage
began), logged as ``mem/<stage>_gb`` with the step's ``mem/peak_gb``. On CPU nothing moves and nothing
is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

USES = {"encode": {"encoder"}, "evaluate": {"encoder"}, "rollout": set(), "reward": set(),
        "reference": {"reference"}, "update": {"optimizer"}}


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Asynchronous copies through pinned host memory (the stage switch synchronises once at its end)."""
    return t.to(device, non_blocking=True)


def _move_tensors(tensors: Iterable[torch.Tensor], device: torch.device) -> None:
    for t in tensors:
        if t.device != device:
            t.data = _to(t.data, device)
            if t.grad is not None:
                t.grad.data = _to(t.grad.data, device)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[tuple[dict, str]]:
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:  # not Adam's scalar step counter
                yield state, key


class TimeShared:
    """Puts each stage's parts on ``device`` and, with ``offload``, the others in CPU memory.

    ``parts``: ``encoder`` / ``reference`` → modules (or ``None``), ``optimizer`` → an optimizer.
    Use ``with schedule.stage("rollout"): ...``; :meth:`metrics` returns the peaks since the last call.
    """

    def __init__(self, device: torch.device | str, parts: dict[str, nn.Module | torch.optim.Optimizer | None],
                 offload: bool):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.offload = offload and self.cuda
        self.parts = {k: v for k, v in parts.items() if v is not None}
        self.peaks: dict[str, float] = {}

    def _place(self, part: str, device: torch.device) -> None:
        obj = self.parts[part]
        if isinstance(obj, torch.optim.Optimizer):
            for state, key in _optimizer_tensors(obj):
                state[key] = _to(state[key], device)
        else:
            _move_tensors([*obj.parameters(), *obj.buffers()], device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name not in USES:
            raise ValueError(f"unknown stage {name!r}; stages: {sorted(USES)}")
        if self.offload:
            cpu = torch.device("cpu")
            for part in self.parts:  # out first, then in: the stage never holds both
                if part not in USES[name]:
                    self._place(part, cpu)
            for part in self.parts:
                if part in USES[name]:
                    self._place(part, self.device)
            torch.cuda.synchronize(self.device)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        yield
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device) / 2**30
            self.peaks[name] = max(self.peaks.get(name, 0.0), peak)

    def metrics(self) -> dict[str, float]:
        """``mem/<stage>_gb`` for every stage run since the last call, and their maximum ``mem/peak_gb``."""
        if not self.peaks:
            return {}
        out = {f"mem/{k}_gb": round(v, 3) for k, v in self.peaks.items()}
        out["mem/peak_gb"] = round(max(self.peaks.values()), 3)
        self.peaks = {}
        return out


def audio_encoder(policy: nn.Module) -> nn.Module | None:
    """The policy's frozen audio encoder, if it has one to offload: our SpeechLM's front end, a native
    model's ``audio_tower`` (Qwen2-Audio), ``encoder`` (Granite Speech) or Whisper's encoder."""
    if hasattr(policy, "front_end"):
        return policy.front_end
    model = getattr(policy, "model", None)
    inner = getattr(model, "model", model)
    for name in ("audio_tower", "encoder"):
        module = getattr(inner, name, None) or getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    return None
