"""The GRPO training step of the ASR recipe on Whisper tiny.en: steps/s, and the FLOP/s it achieves as a
fraction of this machine's fp32 matmul peak, measured in the same run.

    python benchmarks/grpo_step_whisper.py [--steps 4] [--warmup 1] [--threads 2] ...

The step is the real :func:`speechrl.trainers.grpo.train_grpo` with the settings of
``recipes/asr_grpo.yaml``: the policy is Whisper tiny.en as the recipe makes it
(:func:`speechrl.pipelines.speech_grpo.new_policy`: encoder frozen), LoRA r = 16 on the decoder, B = 4
prompts × G = 8 samples at T = 1.0, ≤ 48 new tokens, β = 0.02, rewards accuracy_wer + hallucination +
0.5 · keyword_score. The prompts are ``--prompts`` synthesized sentences (``--voice``) featurized by
the policy, with the frozen encoder's outputs cached (:func:`speechrl.data.features.cached_encodings`)
as the recipe does; each step is rollout (encode once → G samples) → rewards → reference forward →
policy forward/backward → AdamW. Dev evaluation is off.

- **Time**: the trainer's own ``step_s`` and ``rollout_s`` (encode + generate + decode) per step; the
  first ``--warmup`` steps are dropped, medians reported. ``update`` = step − rollout: rewards, group
  statistics, the reference forward, the policy forward/backward and AdamW.
- **FLOPs**: a second, identically seeded run of the same steps under
  ``torch.utils.flop_counter.FlopCounterMode`` (counting slows a step, so it is not timed), read out
  per step. The FLOPs of a step depend on what it sampled: the decode width (tokens of the longest row)
  sets the rollout's decoder steps and the update's padded length, so each timed step is paired with
  the counted step of the same index, which draws the same samples (same seed, same weights); the
  widths of both runs are reported, and ``paired`` says whether they all match. The counter counts
  matmuls, convolutions and attention (CPU flash attention included, mapped to torch's SDPA formulas);
  element-wise work, softmax, sampling and AdamW count 0. The split: ``rollout`` (the policy's
  ``generate``) and ``update`` (the rest: ``forward``, ``completion_logps`` of the reference and the policy,
  and ``backward``).
- **Peak**: the median rate of a ``--matmul-n``² fp32 matmul on the same threads, before and after the
  training (2n³ FLOPs each). ``achieved`` = the timed steps' counted FLOPs ÷ their seconds (summed),
  ``fraction = achieved ÷ peak``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import torch
from rollout_encode_once import SENTENCES
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from speechrl.config import doc
from speechrl.data.features import cached_encodings
from speechrl.data.tasks import INSTRUCTIONS, Example
from speechrl.pipelines.speech_grpo import ModelConfig, new_policy
from speechrl.speech.synthesize import get_voice, synthesize
from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
from speechrl.trainers.lora import LoRAConfig

KEYWORDS = ["fox", "boat", "bread", "clock", "dogs", "keys", "moon", "wind"]  # one per SENTENCES row


def _cpu_attention(query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out: Any, query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# CPU SDPA runs its own flash kernel, which FlopCounterMode does not know: counted as SDPA is (arguments as shapes)
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward}


@dataclass
class Args:
    policy: str = doc("the Whisper checkpoint (recipes/asr_grpo.yaml: whisper-tiny.en)", "whisper-tiny.en")
    steps: int = doc("timed training steps, after the warm-up", 4)
    warmup: int = doc("training steps first, not counted", 1)
    prompts: int = doc("training prompts (synthesized sentences); B = min(prompts, prompts_per_step)", 4)
    prompts_per_step: int = doc("B: prompts per step (recipe: 4)", 4)
    group_size: int = doc("G: samples per prompt (recipe: 8)", 8)
    max_new_tokens: int = doc("completion cap (recipe: 48)", 48)
    temperature: float = doc("rollout temperature (recipe: 1.0)", 1.0)
    beta: float = doc("KL weight (recipe: 0.02)", 0.02)
    lr: float = doc("learning rate (recipe: 5e-5)", 5e-5)
    lora_r: int = doc("LoRA rank (recipe: 16)", 16)
    voice: str = doc("speechrl voice for the prompts", "piper-joe")
    matmul_n: int = doc("n of the n×n @ n×n fp32 matmul that measures the peak", 2048)
    matmul_repeats: int = doc("timed matmuls before and after the training (one warm-up each)", 5)
    threads: int = doc("torch intra-op threads (the matmul peak uses the same)", 2)
    seed: int = doc("seed for prompt order and sampling (both runs)", 0)
    out: str = doc("result file (default benchmarks/results/grpo_step_whisper.json)", "")


class StepLog:
    """Stands in for MetricsLogger (train_grpo's only per-step hook): every training step's metrics."""

    def __init__(self, counter: FlopCounterMode | None = None):
        self.steps: list[dict[str, Any]] = []
        self.counter = counter

    def log(self, metrics: dict[str, Any], step: int, stage: str) -> None:
        if "step_s" in metrics:  # with a counter: the FLOPs counted so far, at the end of the step
            self.steps.append({**metrics, **({"flops_so_far": self.counter.get_total_flops()} if self.counter else {})})


class Probe:
    """Wraps a method of one policy instance: the seconds of each call, the decode width of ``generate``'s
    output, and the FLOPs counted during the call when a counter runs."""

    def __init__(self, obj: Any, name: str, counter: FlopCounterMode | None = None):
        self.calls: list[dict[str, float]] = []
        inner: Callable[..., Any] = getattr(obj, name)

        def probed(*args: Any, **kwargs: Any) -> Any:
            flops0 = counter.get_total_flops() if counter else 0
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            call = {"s": time.perf_counter() - t0, "flops": (counter.get_total_flops() if counter else 0) - flops0}
            ids = out[0] if isinstance(out, tuple) else out
            call["width"] = ids.shape[1]
            self.calls.append(call)
            return out

        setattr(obj, name, probed)


def matmul_gflops(n: int, repeats: int) -> list[float]:
    """GFLOP/s of ``repeats`` fp32 n×n @ n×n matmuls (after one warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return rates


def grpo_config(args: Args, steps: int) -> SpeechGRPOConfig:
    return SpeechGRPOConfig(rewards={"accuracy_wer": 1.0, "hallucination": 1.0, "keyword_score": 0.5},
                            group_size=args.group_size, prompts_per_step=args.prompts_per_step, max_steps=steps,
                            lr=args.lr, beta=args.beta, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, eval_every=0, dev_examples=0,
                            checkpoint_every=10**9, lora=LoRAConfig(r=args.lora_r), seed=args.seed)


def run(args: Args, examples: list[Example], feats: dict, steps: int, count: bool) -> dict[str, Any]:
    """``train_grpo`` for ``steps`` steps on a fresh policy; its logged steps and the probes' calls, and
    with ``count`` every step's counted FLOPs (``flops``: total, rollout, forward, backward per step)."""
    policy = new_policy(ModelConfig(policy=args.policy), args.seed)
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) if count else None
    generate = Probe(policy, "generate", counter)
    forward = Probe(policy, "completion_logps", counter)
    log = StepLog(counter)
    with tempfile.TemporaryDirectory() as out:
        if counter:
            with counter:
                train_grpo(policy, examples, [], feats, "asr", grpo_config(args, steps), out, log)
        else:
            train_grpo(policy, examples, [], feats, "asr", grpo_config(args, steps), out, log)
    result: dict[str, Any] = {"steps": log.steps, "generate": generate.calls, "forward": forward.calls}
    if counter:
        so_far = [0] + [m["flops_so_far"] for m in log.steps]
        totals = [b - a for a, b in zip(so_far, so_far[1:])]
        rollout = [c["flops"] for c in generate.calls]  # one rollout and two forwards (reference, policy) a step
        fwd = [a["flops"] + b["flops"] for a, b in zip(forward.calls[0::2], forward.calls[1::2])]
        result["flops"] = [{"total": t, "rollout": r, "update": t - r, "forward": f, "backward": t - r - f}
                           for t, r, f in zip(totals, rollout, fwd)]
        result["flops_by_op"] = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    if args.prompts > len(SENTENCES):
        raise SystemExit(f"--prompts ≤ {len(SENTENCES)}")
    common.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    load_at_start = round(os.getloadavg()[0], 2)
    peak_before = matmul_gflops(args.matmul_n, args.matmul_repeats)

    policy = new_policy(ModelConfig(policy=args.policy), args.seed)  # features + cached encoder outputs
    voice = get_voice(args.voice)
    sentences = SENTENCES[: args.prompts]
    wavs = [synthesize(s, voice) for s in sentences]
    examples = [Example(id=f"u{i}/asr", utterance_id=f"u{i}", task="asr", instruction=INSTRUCTIONS["asr"],
                        reference=s, keywords=[KEYWORDS[i]]) for i, s in enumerate(sentences)]
    with tempfile.TemporaryDirectory() as folder:
        feats = cached_encodings(folder, {f"u{i}": policy.featurize(w) for i, w in enumerate(wavs)}, policy)
    if not all("hidden" in f for f in feats.values()):
        raise AssertionError("the frozen encoder's outputs were not cached")
    del policy

    timed = run(args, examples, feats, args.warmup + args.steps, count=False)
    print("timed steps: step_s", [round(m["step_s"], 2) for m in timed["steps"]], flush=True)
    counted = run(args, examples, feats, args.warmup + args.steps, count=True)
    peak_after = matmul_gflops(args.matmul_n, args.matmul_repeats)

    steps = timed["steps"][args.warmup:]
    step_s = common.median([m["step_s"] for m in steps])
    rollout_s = common.median([m["rollout_s"] for m in steps])
    forward_calls = timed["forward"][2 * args.warmup:]  # two a step: the reference, then the policy
    flops_steps = counted["flops"][args.warmup:]
    flops = {k: common.median([f[k] for f in flops_steps]) for k in flops_steps[0]}
    seconds = sum(m["step_s"] for m in steps)
    rollout_seconds = sum(m["rollout_s"] for m in steps)
    total_flops = sum(f["total"] for f in flops_steps)
    rollout_flops = sum(f["rollout"] for f in flops_steps)
    peak = common.median(peak_before + peak_after)
    achieved = total_flops / seconds / 1e9
    widths_timed = [c["width"] for c in timed["generate"]]
    widths_counted = [c["width"] for c in counted["generate"]]
    summary = {
        "steps_per_s": 1 / step_s, "step_s": step_s, "rollout_s": rollout_s, "update_s": step_s - rollout_s,
        "reference_forward_s": common.median([c["s"] for c in forward_calls[0::2]]),
        "policy_forward_s": common.median([c["s"] for c in forward_calls[1::2]]),
        "flops_per_step": flops, "achieved_gflops": achieved,
        "achieved_gflops_per_step": [f["total"] / m["step_s"] / 1e9 for f, m in zip(flops_steps, steps)],
        "rollout_gflops": rollout_flops / rollout_seconds / 1e9,
        "update_gflops": (total_flops - rollout_flops) / (seconds - rollout_seconds) / 1e9,
        "peak_gflops": peak, "fraction_of_peak": achieved / peak,
        "paired": widths_timed == widths_counted,
        "decode_width_timed": widths_timed, "decode_width_counted": widths_counted,
        "completion_len_timed": common.median([m["completion_len"] for m in steps]),
        "completion_len_counted": common.median([m["completion_len"] for m in counted["steps"][args.warmup:]]),
        "kept_samples_timed": [m["kept_samples"] for m in steps],
        "kept_samples_counted": [m["kept_samples"] for m in counted["steps"][args.warmup:]],
    }
    print(common.table([["step", f"{step_s:.2f}", f"{flops['total'] / 1e9:.1f}", f"{achieved:.2f}"],
                        ["rollout", f"{rollout_s:.2f}", f"{flops['rollout'] / 1e9:.1f}",
                         f"{summary['rollout_gflops']:.2f}"],
                        ["update", f"{step_s - rollout_s:.2f}", f"{flops['update'] / 1e9:.1f}",
                         f"{summary['update_gflops']:.2f}"]],
                       ["part", "s (median)", "GFLOP (median)", "GFLOP/s (timed steps)"]))
    print(f"\n{1 / step_s:.3f} steps/s; matmul peak {peak:.1f} GFLOP/s ({args.matmul_n}², {args.threads} threads); "
          f"achieved / peak {achieved / peak:.3f}; decode width timed {summary['decode_width_timed']}, "
          f"counted {summary['decode_width_counted']} (paired: {summary['paired']})")
    result = {"benchmark": "grpo_step_whisper", "args": asdict(args), "machine": common.machine(args.threads),
              "load_avg_1m_at_start": load_at_start,
              "audio_s": [round(len(w) / 16000, 3) for w in wavs], "summary": summary,
              "peak_gflops_runs": {"before": peak_before, "after": peak_after},
              "timed": timed, "counted": counted}
    print("wrote", common.write_result("grpo_step_whisper", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
