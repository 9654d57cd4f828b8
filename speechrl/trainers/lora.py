"""LoRA on a policy's LM, and the reference policy it implies — used by every RL/preference trainer.

With an adapter the reference is the same model with the adapter switched off (no second copy in
memory); full fine-tuning (``r = 0``) needs a frozen copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from speechrl.config import doc


@dataclass
class LoRAConfig:
    r: int = doc("LoRA rank (0: train the full LM)", 16, ge=0)
    alpha: int = doc("LoRA alpha", 32, gt=0)
    dropout: float = doc("LoRA dropout", 0.0, ge=0, le=1)
    target_modules: list[str] = doc("module names LoRA wraps", default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def add_lora(policy: Any, cfg: LoRAConfig) -> None:
    """Freeze everything but a fresh LoRA adapter on ``policy.lm`` (``r = 0``: the whole LM trains)."""
    from peft import LoraConfig, get_peft_model

    policy.requires_grad_(False)
    if cfg.r > 0:
        policy.lm = get_peft_model(policy.lm, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                                         target_modules=cfg.target_modules))
    else:
        policy.lm.requires_grad_(True)


def reference_policy(policy: Any) -> Any:
    """A frozen copy of the policy for the KL term — needed only without LoRA (None with an adapter)."""
    if hasattr(policy.lm, "disable_adapter"):
        return None
    ref = copy.deepcopy(policy).eval()
    return ref.requires_grad_(False)


@torch.no_grad()
def reference_forward(model: Any, policy: Any, ref: Any, *args: Any, **kwargs: Any) -> Any:
    """The reference policy's ``forward(*args, **kwargs)``: ``ref`` when there is a copy, else the
    trained ``model`` (the accelerate-prepared ``policy``) with its LoRA adapter switched off."""
    if ref is not None:
        return ref(*args, **kwargs)
    with policy.lm.disable_adapter():
        return model(*args, **kwargs)
