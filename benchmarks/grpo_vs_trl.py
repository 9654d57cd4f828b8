"""GRPO training throughput: speechrl's ``train_grpo`` against TRL's ``GRPOTrainer``, same model, same work.

    python benchmarks/grpo_vs_trl.py [--steps 6] [--warmup 2] [--rounds 2] [--lora-r 8] ...

Both sides train the same tiny random causal LM (saved once to a temp folder and loaded fresh by every
run) with the SmolLM2 tokenizer, on the same prompts, with sentence BLEU against a ``reference`` column
(``speechrl.rewards.make_reward({"bleu": 1})``, the same callable on both sides) as the reward.

speechrl's side is the real trainer, :func:`speechrl.trainers.grpo.train_grpo`, on a text-only policy:
a :class:`~speechrl.models.speech_lm.SpeechLM` whose unit front end receives zero units per prompt, so
the prompt is exactly the text chat turn ``<|im_start|>user\\n\\n{instruction}<|im_end|>\\n<|im_start|>
assistant\\n`` (checked below: same token ids as the plain-string prompt TRL tokenizes).

One optimizer step is the same work on both sides:

- B prompts × G completions sampled (temperature 1, top-p 1, no top-k), ``max_new_tokens`` cap;
  TRL: ``per_device_train_batch_size = B·G`` (TRL counts completions, not prompts),
  ``gradient_accumulation_steps = 1`` → ``steps_per_generation = 1``, ``generation_batch_size = B·G``:
  one generation per optimizer step and no old-log-prob pass (μ = 1 on both sides);
- rewards, group z-scored advantages (TRL ``scale_rewards="group"`` = ours ``"std"``), no dynamic
  sampling on our side (TRL has none);
- one reference forward (β > 0; LoRA: the adapter switched off on both sides), one policy
  forward + backward, one AdamW step on the same parameters, linear LR schedule, no warm-up.

TRL defaults turned off because our trainer does not do them: activation checkpointing (TRL's
``gradient_checkpointing=True``, which transformers 5.23 renames ``activation_checkpointing``), ``bf16``
(TRL's default True, on CPU too), gradient clipping (``max_grad_norm=1.0`` → 0),
``use_bias_correction_kl`` (True → False, as our loss), fused AdamW (→ ``adamw_torch``); the loss
normalisation is set equal (``loss_type``, TRL's default is ``dapo``), and so is β (TRL's default is 0).
TRL's progress printer is removed; ``logging_steps=1`` so its completion lengths can be read back (ours
logs every step too).

What stays different, by design of each trainer: TRL scores log-probs through its fused, chunked LM
head (``trl/kernels/chunked_logprob.py``, always on, with the entropy computed too); without Triton (CPU)
it projects **every** prompt and completion position in tiles and recomputes them in the backward pass.
Ours runs the LM head on the completion positions only (``logits_to_keep``) and takes one
``log_softmax``. On CPU that head is most of TRL's step, so the ratio here is not a GPU prediction. With
``--lora-r 0`` both do one reference forward per step, but TRL's reference is a frozen copy loaded from
the model folder while ours is the live policy (no adapter to switch off), so our KL is 0 there.

Timing: wall time between consecutive step ends (our logger call; TRL's ``on_step_end``), so it holds
everything a step does (batching, generation, reward, both forwards, backward, optimizer, logging), and
nothing before the first or after the last step (model load, our start/end dev evaluation). The first
``warmup`` steps are not counted. Sides alternate which goes first in each round; the ratio is
speechrl steps/s ÷ TRL steps/s per round, and the median over rounds is reported.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import numpy as np
import torch

from speechrl.config import doc
from speechrl.data.tasks import Example
from speechrl.models.frontends import UnitFrontEnd
from speechrl.models.hub import load_tokenizer
from speechrl.models.policy import PromptBatch
from speechrl.models.speech_lm import SpeechLM
from speechrl.rewards import make_reward
from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
from speechrl.trainers.lora import LoRAConfig

SENTENCES = [
    "The red fox ran home before the rain.", "A small boat drifted across the quiet lake.",
    "My sister bakes bread every Sunday morning.", "The old clock in the hall stopped at noon.",
    "Two dogs chased a ball along the beach.", "He forgot his keys on the kitchen table.",
    "The children sang a song about the moon.", "A cold wind blew through the open window.",
    "She painted the fence a bright shade of blue.", "The train to the city leaves at seven.",
    "We planted tomatoes in the garden last spring.", "The teacher read a story to the class.",
    "A green frog jumped into the muddy pond.", "They built a tall tower out of blocks.",
    "The baker sold the last loaf of bread.", "An owl watched the field from the barn roof.",
]
INSTRUCTION = "Repeat the sentence: {}"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Args:
    steps: int = doc("measured optimizer steps per run, after the warm-up", 6)
    warmup: int = doc("steps run first and not measured (≥ 1: the first step holds one-off set-up)", 2)
    rounds: int = doc("runs per side; which side goes first alternates between rounds", 2)
    prompts_per_step: int = doc("B: prompts per optimizer step", 2)
    group_size: int = doc("G: completions per prompt", 8)
    max_new_tokens: int = doc("completion cap (TRL: max_completion_length)", 32)
    beta: float = doc("k3 KL weight (> 0 adds a reference forward per step on both sides)", 0.02)
    lr: float = doc("learning rate", 1e-4)
    loss_type: str = doc("grpo | dapo | bnpo | dr_grpo (set on both sides)", "grpo")
    lora_r: int = doc("LoRA rank on both sides (0: full fine-tune)", 8)
    lora_alpha: int = doc("LoRA alpha", 16)
    arch: str = doc("llama | qwen2: the tiny random LM", "llama")
    hidden: int = doc("LM hidden size", 64)
    layers: int = doc("LM decoder layers", 2)
    threads: int = doc("torch intra-op threads (both sides)", 1)
    seed: int = doc("seed for the model and both trainers", 0)
    out: str = doc("result file (default benchmarks/results/grpo_vs_trl.json)", "")


def chat_prompt(instruction: str) -> str:
    """The text TRL gets: exactly the chat turn SpeechLM builds around an empty audio span."""
    return f"<|im_start|>user\n\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def text_only_policy(lm_dir: Path, tokenizer) -> SpeechLM:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    return SpeechLM(lm, tokenizer, UnitFrontEnd(lm.config.hidden_size, dim=32), {"kind": "units", "dim": 32})


NO_AUDIO = {"ids": np.zeros(0, np.int64), "durations": np.zeros(0, np.int64)}


def check_text_only_prompt(lm_dir: Path, tokenizer) -> int:
    """Zero units → no audio embeddings: the prompt embeddings are those of the plain chat-turn tokens."""
    policy = text_only_policy(lm_dir, tokenizer)
    instruction = INSTRUCTION.format(SENTENCES[0])
    ids = tokenizer(chat_prompt(instruction))["input_ids"]  # as TRL tokenizes a plain-string prompt
    with torch.no_grad():
        enc = policy.encode(PromptBatch([NO_AUDIO], [instruction]))
        same = enc["embeds"].shape[1] == len(ids) and torch.equal(
            enc["embeds"][0], policy.lm.get_input_embeddings()(torch.tensor(ids)))
    if not same:
        raise AssertionError("the text-only SpeechLM prompt differs from the plain chat-turn tokens")
    return len(ids)


class _SpeechrlClock:
    """Stands in for MetricsLogger (train_grpo's only per-step hook): step-end times and metrics."""

    def __init__(self):
        self.ends: list[float] = []
        self.steps: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, Any], step: int, stage: str) -> None:
        if "step_s" in metrics:  # a training step (dev evaluations log dev_* only)
            self.ends.append(time.perf_counter())
            self.steps.append(metrics)


def run_speechrl(args: Args, lm_dir: Path, tokenizer, examples: list[Example]) -> dict[str, Any]:
    policy = text_only_policy(lm_dir, tokenizer)
    feats = {e.utterance_id: NO_AUDIO for e in examples}
    cfg = SpeechGRPOConfig(rewards={"bleu": 1.0}, group_size=args.group_size, prompts_per_step=args.prompts_per_step,
                     max_steps=args.warmup + args.steps, lr=args.lr, max_new_tokens=args.max_new_tokens,
                     loss_type=args.loss_type, scale_rewards="std", beta=args.beta, num_iterations=1,
                     dynamic_sampling=False, eval_every=0, dev_examples=1, checkpoint_every=10**9,
                     lora=LoRAConfig(r=args.lora_r, alpha=args.lora_alpha, dropout=0.0, target_modules=TARGETS),
                     seed=args.seed)
    clock = _SpeechrlClock()
    with tempfile.TemporaryDirectory() as out:
        train_grpo(policy, examples, examples[:1], feats, "asr", cfg, out, clock)
    measured = clock.ends[-1] - clock.ends[args.warmup - 1]
    return {"ends": clock.ends,
            "completion_len": float(np.mean([m["completion_len"] for m in clock.steps[args.warmup:]])),
            "rollout_share": float(sum(m["rollout_s"] for m in clock.steps[args.warmup:]) / measured)}


def run_trl(args: Args, lm_dir: Path, tokenizer, examples: list[Example]) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.logs: list[dict[str, Any]] = []

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    dataset = Dataset.from_list([{"prompt": chat_prompt(e.instruction), "reference": e.reference} for e in examples])
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        config = TRLConfig(
            output_dir=out, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
            seed=args.seed, max_steps=args.warmup + args.steps,
            per_device_train_batch_size=args.prompts_per_step * args.group_size, gradient_accumulation_steps=1,
            num_generations=args.group_size, max_completion_length=args.max_new_tokens,
            temperature=1.0, top_p=1.0, top_k=0,
            learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
            max_grad_norm=0.0, beta=args.beta, loss_type=args.loss_type, scale_rewards="group", epsilon=0.2,
            num_iterations=1, use_bias_correction_kl=False, mask_truncated_completions=False,
            activation_checkpointing=False, bf16=False, dataloader_num_workers=0)
        peft = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules=TARGETS,
                          task_type="CAUSAL_LM") if args.lora_r > 0 else None
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(lm_dir), reward_funcs=[make_reward({"bleu": 1.0})],
                              args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft,
                              callbacks=[clock])
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        generate_s = _time_calls(trainer, "_generate_single_turn")  # TRL logs this only to wandb/mlflow/trackio
        trainer.train()
    measured = clock.ends[-1] - clock.ends[args.warmup - 1]
    return {"ends": clock.ends,
            "completion_len": float(np.mean([m["completions/mean_length"] for m in clock.logs[args.warmup:]])),
            "rollout_share": float(sum(generate_s[args.warmup:]) / measured)}


def _time_calls(obj: Any, method: str) -> list[float]:
    """Wrap ``obj.method`` (on the instance only) to record the seconds of each call."""
    inner, seconds = getattr(obj, method), []

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            seconds.append(time.perf_counter() - t0)

    setattr(obj, method, timed)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be ≥ 1")
    common.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = load_tokenizer("smollm2-135m")
    examples = [Example(id=f"s{i}", utterance_id=f"s{i}", task="sqa", instruction=INSTRUCTION.format(s), reference=s)
                for i, s in enumerate(SENTENCES)]
    sides = {"speechrl": run_speechrl, "trl": run_trl}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        lm_dir = Path(tmp) / "lm"
        common.tiny_lm(len(tokenizer), args.arch, args.hidden, args.layers, args.seed).save_pretrained(lm_dir)
        tokenizer.save_pretrained(lm_dir)
        prompt_tokens = check_text_only_prompt(lm_dir, tokenizer)
        for r in range(args.rounds):
            for side in (["speechrl", "trl"] if r % 2 == 0 else ["trl", "speechrl"]):
                t0 = time.perf_counter()
                res = sides[side](args, lm_dir, tokenizer, examples)
                ends = res.pop("ends")
                if len(ends) != args.warmup + args.steps:
                    raise RuntimeError(f"{side}: {len(ends)} step ends for {args.warmup + args.steps} steps")
                measured = ends[-1] - ends[args.warmup - 1]
                runs.append({"side": side, "round": r, "steps_per_s": args.steps / measured,
                             "step_ms": 1000 * measured / args.steps, "run_s": time.perf_counter() - t0, **res})
                print(f"round {r} {side:8s} {runs[-1]['steps_per_s']:.3f} steps/s", flush=True)

    def side_runs(side: str) -> list[dict[str, Any]]:
        return [x for x in runs if x["side"] == side]

    ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(side_runs("speechrl"), side_runs("trl"))]
    summary = {side: {"steps_per_s": common.median([x["steps_per_s"] for x in side_runs(side)]),
                      "step_ms": common.median([x["step_ms"] for x in side_runs(side)]),
                      "completion_len": common.median([x["completion_len"] for x in side_runs(side)])}
               for side in sides}
    summary["ratio_speechrl_over_trl"] = common.median(ratios)
    summary["ratios"] = ratios
    for side in sides:
        summary[side]["rollout_share"] = common.median([x["rollout_share"] for x in side_runs(side)])
    rows = [[side, f"{s['steps_per_s']:.3f}", f"{s['step_ms']:.0f}", f"{s['rollout_share']:.0%}",
             f"{s['step_ms'] * (1 - s['rollout_share']):.0f}", f"{s['completion_len']:.1f}"]
            for side, s in ((k, summary[k]) for k in sides)]
    print()
    print(common.table(rows, ["side", "steps/s", "ms/step", "rollout", "ms/step w/o rollout", "completion len"]))
    print(f"\nratio speechrl/trl (median of {len(ratios)} rounds): {summary['ratio_speechrl_over_trl']:.3f}  "
          f"(per round: {', '.join(f'{x:.3f}' for x in ratios)}; > 1: speechrl faster)")
    result = {"benchmark": "grpo_vs_trl", "args": asdict(args), "prompt_tokens": prompt_tokens,
              "completions_per_step": args.prompts_per_step * args.group_size,
              "machine": common.machine(args.threads), "summary": summary, "runs": runs}
    path = common.write_result("grpo_vs_trl", result, args.out or None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
