"""Rollout engines — who samples GRPO's G completions per prompt — behind one interface.

An engine takes the encoded prompt batch (each prompt already repeated G times: the audio is
encoded once) and returns the completion ids and the sampled tokens' log-probs under the **raw**
next-token distribution (temperature 1, no top-p/k filtering) — what the trainer's teacher forcing
computes. So every GRPO update checks **log-prob parity** between rollout and trainer at no extra
cost (:func:`logp_parity`, logged as ``rollout_logp_diff_mean`` / ``_max``): a gap means the engine
and the trainer disagree on weights, positions or padding, and the importance ratios are off-policy
in a way nobody asked for.

Engines (``grpo.rollout_engine``):

* ``hf`` (default) — the policy's own Hugging Face ``generate`` in the training process, for every
  policy (SpeechLM, Qwen2-Audio, Granite Speech, Whisper); its weights are the trainer's, so
  :meth:`HFEngine.sync_weights` has nothing to push.
* ``vllm`` — not built: it needs a CUDA GPU and the vLLM wheel, and no machine this project is
  developed on has had one. The interface it will implement is :class:`Engine` (``sample`` with
  ``prompt_embeds`` and ``logprobs``, ``sync_weights`` pushing the LoRA-merged LM weights after each
  update); selecting it is an error that says so.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from speechrl.models.policy import Encoded


class Engine(Protocol):
    name: str

    def sample(self, policy: Any, enc: Encoded, max_new_tokens: int, temperature: float,
               top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [N, T], raw log-probs of the sampled tokens [N, T]) for the N encoded rows."""

    def sync_weights(self, policy: Any) -> None:
        """Make the engine sample from the trainer's current weights."""


class HFEngine:
    """The policy's own ``generate`` (default)."""

    name = "hf"

    def sample(self, policy: Any, enc: Encoded, max_new_tokens: int, temperature: float,
               top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        return policy.generate(enc, max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                               return_logps=True)

    def sync_weights(self, policy: Any) -> None:
        return None  # the trainer's model itself


ENGINES = {"hf": HFEngine}


def make_engine(name: str) -> Engine:
    if name == "vllm":
        raise ValueError("rollout engine 'vllm' is not built yet: it needs a CUDA GPU and the vllm wheel "
                         "(see speechrl/rollout.py); use rollout_engine: hf")
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; choose one of {sorted(ENGINES)}")
    return ENGINES[name]()


def logp_parity(engine_logps: torch.Tensor, trainer_logps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean and max |log π_engine − log π_trainer| over the completion tokens (``mask`` 1); rows whose
    engine log-probs are NaN (off-policy samples the engine did not draw) are left out."""
    diff = (engine_logps.to(trainer_logps.dtype) - trainer_logps.detach()).abs()
    valid = mask.bool() & torch.isfinite(diff)
    if not valid.any():
        return {}
    return {"rollout_logp_diff_mean": diff[valid].mean().item(), "rollout_logp_diff_max": diff[valid].max().item()}
