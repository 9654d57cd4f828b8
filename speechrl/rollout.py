"""Rollout engines — who samples GRPO's G completions per prompt — behind one interface.

An engine takes the encoded prompt batch (each prompt already repeated G times: the audio is
encoded once) and returns the completion ids and the sampled tokens' log-probs under the next-token
distribution **at the sampling temperature** (logits / T) — what the trainer's teacher forcing
computes with the same temperature. So every GRPO update checks **log-prob parity** between rollout and trainer at no extra
cost (:func:`logp_parity`, logged as ``rollout_logp_diff_mean`` / ``_max``): a gap means the engine
and the trainer disagree on weights, positions or padding, and the importance ratios are off-policy
in a way nobody asked for.

Engines (``grpo.rollout_engine``):

* ``hf`` (default) — the policy's own Hugging Face ``generate`` in the training process, for every
  policy (SpeechLM, Qwen2-Audio, Granite Speech, Whisper); its weights are the trainer's, so
  :meth:`HFEngine.sync_weights` has nothing to push.
* ``vllm`` — :class:`VLLMEngine` (``pip install vllm``, a CUDA GPU), for the decoder-only policies
  (our SpeechLM, Qwen2-Audio, Granite Speech): the policy's text LM is exported once as a plain HF
  causal-LM folder (:func:`causal_lm_state`) that vLLM serves; each prompt goes in as its **prompt
  embeddings** (audio span included, the encoder having run once in the trainer), and sampled tokens
  come back with their log-probs after temperature scaling (``logprobs_mode="processed_logprobs"``, as
  TRL; with ``top_p < 1`` vLLM renormalises over the nucleus, which the parity metric then shows). Two modes
  (``grpo.vllm.mode``):

  - ``colocate``: ``vllm.LLM`` in the training process, sharing the GPU
    (``gpu_memory_utilization``); after every update the LoRA-merged LM weights are loaded into
    vLLM's model in place (``load_weights``), so the next rollout samples from the trained policy.
  - ``server``: a ``vllm serve <folder> --enable-prompt-embeds --enable-lora
    --logprobs-mode processed_logprobs`` process on other GPUs or nodes (``grpo.vllm.url``); after every
    update the trainer writes its LoRA adapter and asks the server to load it
    (``/v1/load_lora_adapter``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` on the server), and samples
    through ``/v1/completions`` with that adapter. Full fine-tuning needs ``colocate``.

  Whisper (encoder–decoder) has no prompt-embedding path in vLLM: use ``hf``. The parity log above is
  what tells a user the engine and the trainer agree.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from speechrl.config import doc
from speechrl.http_client import post_with_retries
from speechrl.models.policy import Encoded, pad_completions


@dataclass
class VLLMConfig:
    mode: Literal["colocate", "server"] = doc("colocate: vllm.LLM in the trainer; server: a vllm serve process", "colocate")
    url: str = doc("server mode: the vllm serve base URL, e.g. http://gpu-node:8000", "")
    gpu_memory_utilization: float = doc("colocate: GPU memory fraction vLLM may take", 0.3, gt=0, le=1)
    dtype: str = doc("weights dtype vLLM runs in (auto, bfloat16, float16, float32)", "auto")
    max_model_len: int = doc("longest prompt + completion vLLM plans for", 2048, ge=1)
    timeout_s: float = doc("server mode: seconds per request", 120.0, gt=0)
    max_retries: int = doc("server mode: retries of a failed request", 2, ge=0)


class Engine(Protocol):
    name: str

    def sample(self, policy: Any, enc: Encoded, max_new_tokens: int, temperature: float,
               top_p: float, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [N, T], log-probs of the sampled tokens at ``temperature`` [N, T]) for the N encoded rows."""

    def sync_weights(self, policy: Any) -> None:
        """Make the engine sample from the trainer's current weights."""


class HFEngine:
    """The policy's own ``generate`` (default)."""

    name = "hf"

    def sample(self, policy: Any, enc: Encoded, max_new_tokens: int, temperature: float,
               top_p: float, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return policy.generate(enc, max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p,
                               top_k=top_k, return_logps=True)

    def sync_weights(self, policy: Any) -> None:
        return None  # the trainer's model itself


def causal_lm_state(policy: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """The policy's text LM as a standalone HF causal LM: ``(config, state dict)`` with LoRA merged
    (W + ΔW) and the keys a ``*ForCausalLM`` of that config has (``model.…``, ``lm_head.weight``)."""
    from speechrl.models.native import merged_state_dict

    if hasattr(policy, "front_end"):  # our SpeechLM: policy.lm is a causal LM, maybe peft-wrapped
        lm = policy.lm
        state = merged_state_dict(lm) or lm.state_dict()
        config = lm.get_base_model().config if hasattr(lm, "get_base_model") else lm.config
        return config, {k.removeprefix("base_model.model."): v for k, v in state.items()}
    model = policy.model
    if model.config.is_encoder_decoder:
        raise ValueError(f"{type(model).__name__} is an encoder-decoder model: vLLM has no prompt-embedding "
                         "path for it; use grpo.rollout_engine: hf")
    state = merged_state_dict(model) or model.state_dict()
    text: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("base_model.model.")
        if key.startswith("model.language_model."):  # Qwen2-Audio: the LM body under model.language_model
            text["model." + key.removeprefix("model.language_model.")] = value
        elif key.startswith("language_model."):  # Granite Speech: a whole causal LM
            text[key.removeprefix("language_model.")] = value
        elif key.startswith("lm_head."):
            text[key] = value
    return model.config.text_config, text


def export_causal_lm(policy: Any, folder: Path) -> Path:
    """Write the policy's text LM (:func:`causal_lm_state`) + tokenizer as an HF folder vLLM loads
    (``config.json`` naming the ``*ForCausalLM`` class, one safetensors file; written atomically)."""
    import copy

    from safetensors.torch import save_file
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config, state = causal_lm_state(policy)
    config = copy.deepcopy(config)
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    head, embed = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    if head is not None and embed is not None and head.data_ptr() == embed.data_ptr():
        config.tie_word_embeddings = True  # tied (in a composite model, maybe only its outer config says so)
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # one tensor in the file
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config.save_pretrained(tmp)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, tmp / "model.safetensors",
              metadata={"format": "pt"})
    policy.tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def prompt_rows(enc: Encoded) -> list[torch.Tensor]:
    """Each encoded prompt's embeddings [L_i, D] without its left padding (what vLLM takes)."""
    if "embeds" not in enc.tensors:
        raise ValueError("the vLLM engine takes prompt embeddings (a decoder-only policy); use rollout_engine: hf")
    return [e[m.bool()].detach() for e, m in zip(enc["embeds"], enc["mask"])]


def completions_to_tensors(rows: list[tuple[list[int], list[float]]], pad_token_id: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids, their log-probs) per sample → right-padded ``ids`` [N, T] and ``logps`` [N, T]
    (0 after each row's end, like the HF engine's padding)."""
    ids, mask = pad_completions([r[0] for r in rows], pad_token_id)
    logps = torch.zeros(ids.shape, dtype=torch.float32)
    for i, (_, lp) in enumerate(rows):
        logps[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
    return ids, logps


def _vllm_model(llm: Any) -> Any:
    """The torch model inside an in-process ``vllm.LLM`` (V1 single-process, or V0 layout)."""
    worker = llm.llm_engine.model_executor.driver_worker
    runner = getattr(getattr(worker, "worker", None), "model_runner", None) or worker.model_runner
    return runner.model


class VLLMEngine:
    """vLLM rollouts from prompt embeddings, colocated or from a server (see the module docstring)."""

    name = "vllm"

    def __init__(self, cfg: VLLMConfig, work_dir: str | Path):
        self.cfg, self.work_dir = cfg, Path(work_dir)
        self.llm: Any = None
        self.adapter: str | None = None  # server mode: the LoRA adapter the server samples with
        self.version = 0

    # -- start ------------------------------------------------------------------------------------
    def _start(self, policy: Any) -> None:
        folder = export_causal_lm(policy, self.work_dir / "vllm_lm")
        if self.cfg.mode == "server":
            if not self.cfg.url:
                raise ValueError("grpo.vllm.mode: server needs grpo.vllm.url (the vllm serve address)")
            if not hasattr(policy.lm, "peft_config"):
                raise ValueError("vLLM server mode syncs LoRA adapters; full fine-tuning (lora.r: 0) needs "
                                 "grpo.vllm.mode: colocate")
            self.sync_weights(policy)  # the server starts from the same weights: adapter 0
            return
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("rollout_engine: vllm needs the vllm package and a CUDA GPU "
                              "(pip install vllm); use rollout_engine: hf otherwise") from err
        self.llm = LLM(model=str(folder), enable_prompt_embeds=True, logprobs_mode="processed_logprobs",
                       gpu_memory_utilization=self.cfg.gpu_memory_utilization, dtype=self.cfg.dtype,
                       max_model_len=self.cfg.max_model_len)

    # -- Engine -----------------------------------------------------------------------------------
    def sample(self, policy: Any, enc: Encoded, max_new_tokens: int, temperature: float,
               top_p: float, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.llm is None and self.adapter is None:
            self._start(policy)
        rows = prompt_rows(enc)
        params = dict(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, logprobs=0,
                      stop_token_ids=[policy.eos_token_id], **({"top_k": top_k} if top_k else {}))
        sampled = self._sample_server(rows, params) if self.cfg.mode == "server" else self._sample_local(rows, params)
        ids, logps = completions_to_tensors(sampled, policy.pad_token_id)
        device = enc["embeds"].device
        return ids.to(device), logps.to(device)

    def _sample_local(self, rows: list[torch.Tensor], params: dict) -> list[tuple[list[int], list[float]]]:
        from vllm import SamplingParams

        outs = self.llm.generate([{"prompt_embeds": r.cpu()} for r in rows], SamplingParams(**params), use_tqdm=False)
        result = []
        for out in outs:
            c = out.outputs[0]
            result.append((list(c.token_ids), [step[t].logprob for t, step in zip(c.token_ids, c.logprobs)]))
        return result

    def _post(self, path: str, body: dict) -> dict:
        reply, _, failure = post_with_retries(
            self.cfg.url.rstrip("/") + path, json.dumps(body).encode(), {"Content-Type": "application/json"},
            timeout_s=self.cfg.timeout_s, max_retries=self.cfg.max_retries, backoff_s=1.0, max_backoff_s=10.0)
        if reply is None:
            raise RuntimeError(f"vLLM server {self.cfg.url}{path} failed ({failure}); the rollout cannot go on")
        return json.loads(reply) if reply.strip().startswith(b"{") else {}

    def _sample_server(self, rows: list[torch.Tensor], params: dict) -> list[tuple[list[int], list[float]]]:
        def b64(t: torch.Tensor) -> str:
            buf = io.BytesIO()
            torch.save(t.cpu(), buf)  # vLLM's documented prompt_embeds encoding (read with weights_only)
            return base64.b64encode(buf.getvalue()).decode()

        reply = self._post("/v1/completions", {"model": self.adapter, "prompt_embeds": [b64(r) for r in rows],
                                               "return_tokens_as_token_ids": True, **params})
        choices = sorted(reply["choices"], key=lambda c: c["index"])
        return [([int(t.removeprefix("token_id:")) for t in c["logprobs"]["tokens"]],
                 [float(x) for x in c["logprobs"]["token_logprobs"]]) for c in choices]

    def sync_weights(self, policy: Any) -> None:
        """Colocate: LoRA-merged LM weights into vLLM's model in place. Server: the adapter, loaded
        under a new name (the previous one unloaded)."""
        if self.cfg.mode == "server":
            self.version += 1
            name = f"speechrl-{self.version}"
            folder = self.work_dir / "vllm_adapters" / name
            policy.lm.save_pretrained(folder)  # the adapter only
            self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())})
            if self.adapter is not None:
                self._post("/v1/unload_lora_adapter", {"lora_name": self.adapter})
                shutil.rmtree(self.work_dir / "vllm_adapters" / self.adapter, ignore_errors=True)
            self.adapter = name
        elif self.llm is not None:
            _, state = causal_lm_state(policy)
            _vllm_model(self.llm).load_weights(state.items())
            if hasattr(self.llm, "reset_prefix_cache"):
                self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights


ENGINES = ("hf", "vllm")


def make_engine(name: str, vllm: VLLMConfig | None = None, work_dir: str | Path = ".") -> Engine:
    """The rollout engine ``name``; ``vllm`` settings and a folder for its exported weights."""
    if name == "hf":
        return HFEngine()
    if name == "vllm":
        return VLLMEngine(vllm or VLLMConfig(), work_dir)
    raise ValueError(f"unknown rollout engine {name!r}; choose one of {list(ENGINES)}")


def logp_parity(engine_logps: torch.Tensor, trainer_logps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Mean and max |log π_engine − log π_trainer| over the completion tokens (``mask`` 1); rows whose
    engine log-probs are NaN (off-policy samples the engine did not draw) are left out."""
    diff = (engine_logps.to(trainer_logps.dtype) - trainer_logps.detach()).abs()
    valid = mask.bool() & torch.isfinite(diff)
    if not valid.any():
        return {}
    return {"rollout_logp_diff_mean": diff[valid].mean().item(), "rollout_logp_diff_max": diff[valid].max().item()}
