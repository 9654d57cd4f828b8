"""Training-step time of TTS DiffRO vs TTS GRPO (which renders and transcribes every sample).

    python benchmarks/diffro_step.py [--steps 4] [--rounds 2] [--group-size 8] [--prompts 2] ...

Both sides are the real :func:`speechrl.trainers.tts_rl.train_tts_rl` on the same TTS LM (SmolLM2
truncated to ``--layers`` decoder layers + speech embeddings/head, LoRA r = 16 as the recipe) and the same
texts (story-grammar sentences), B texts × G samples per step:

- ``grpo``: rollout → units → Piper → Whisper tiny.en → rewards (1 − tanh(3·WER), duration) → advantages
  → reference forward → policy forward/backward → AdamW;
- ``diffro``: rollout → reference forward → policy forward → Gumbel-Softmax → Token2Text (``--t2t-layers``)
  forward/backward → AdamW;
- ``combined_filtered`` (for reference): both, DiffRO on the positive-advantage samples.

With ``--run DIR`` (a finished ``recipes/tts_rl.yaml`` run) the trained SFT model and Token2Text are
loaded, so rollouts have their real lengths; without it the speech parts are random and every rollout
runs to ``--max-new-tokens`` (40 ≈ one corpus sentence of 33 tokens on average, rendered as ≈3 s of
speech). The step time is the trainer's own ``step_s`` (whole step, rollout included); the first
``--warmup`` steps of each run are dropped (model and engine loading), methods alternate order every
round, medians are reported. ``ratio = diffro step_s ÷ grpo step_s`` (target ≤ 0.3).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.corpus.grammar import generate_stories
from speechrl.runlog import read_metrics

METHODS = ("grpo", "diffro", "combined_filtered")


@dataclass
class Args:
    steps: int = doc("timed steps per run, after the warm-up", 4)
    warmup: int = doc("steps per run not counted", 1)
    rounds: int = doc("runs per method (alternating order)", 2)
    prompts: int = doc("B: texts per step", 2)
    group_size: int = doc("G: samples per text", 8)
    max_new_tokens: int = doc("rollout cap (speech tokens)", 40)
    layers: int = doc("TTS LM decoder layers kept (recipe default)", 2)
    t2t_layers: int = doc("Token2Text decoder layers kept (recipe default)", 2)
    lm: str = doc("text LM", "smollm2-135m")
    run: str = doc("a finished tts_rl run folder to load SFT + Token2Text from ('': random speech parts)", "")
    threads: int = doc("torch intra-op threads", 2)
    methods: list[str] = doc("methods to time", default_factory=lambda: list(METHODS))
    out: str = doc("result JSON path ('': benchmarks/results/diffro_step.json)", "")


def models(args: Args):
    from speechrl.models.token2text import Token2Text
    from speechrl.models.tts_lm import SpeechVocab, TTSLM
    from speechrl.runlog import read_json

    if args.run:
        run = Path(args.run)
        vocab = SpeechVocab.from_dict(read_json(run / "vocab.json"))
    else:
        vocab = SpeechVocab(list(range(43)) + [189])  # 44 units, as the corpus codebook
    policy = TTSLM.create(vocab, args.lm, args.layers)
    t2t = Token2Text.create(vocab, args.lm, args.t2t_layers)
    if args.run:
        checkpoint.load_weights(run / "sft" / "best" / "model.safetensors", policy)
        checkpoint.load_weights(run / "token2text" / "best" / "model.safetensors", t2t)
    return policy, t2t


def time_method(method: str, args: Args, texts: list[str], renderer: Any) -> dict[str, Any]:
    from speechrl.runlog import MetricsLogger
    from speechrl.trainers.tts_rl import TTSRLConfig, train_tts_rl

    policy, t2t = models(args)
    cfg = TTSRLConfig(method="combined" if method.startswith("combined") else method, sample_filter=True,
                      group_size=args.group_size, prompts_per_step=args.prompts, max_new_tokens=args.max_new_tokens,
                      max_steps=args.warmup + args.steps, dev_examples=0, checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as out:
        train_tts_rl(policy, t2t, texts, [], cfg, out, MetricsLogger(out, tensorboard=False), method, renderer)
        rows = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "step_s" in m][args.warmup:]
    keys = ("step_s", "rollout_s", "render_s", "update_s", "tokens")
    return {k: [round(r[k], 4) for r in rows if k in r] for k in keys}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n\n")[0], argv)
    common.set_threads(args.threads)
    from speechrl.rewards.tts import UnitRenderer

    renderer = UnitRenderer()
    renderer.vocoder.voice, renderer.transcriber.load()  # engines loaded before any clock starts
    texts = [s.text for story in generate_stories(12, seed=5) for s in story.sentences]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        order = args.methods if r % 2 == 0 else list(reversed(args.methods))
        for method in order:
            runs[method].append(time_method(method, args, texts, renderer))
            print(f"round {r} {method}: step_s {runs[method][-1]['step_s']}", flush=True)
    summary = {}
    for method, rs in runs.items():
        summary[method] = {k: common.median([v for run in rs for v in run[k]]) for k in rs[0]}
    if "grpo" in summary and "diffro" in summary:
        summary["ratio_diffro_over_grpo"] = summary["diffro"]["step_s"] / summary["grpo"]["step_s"]
    rows = [[m, f"{s['step_s']:.2f}", f"{s['rollout_s']:.2f}", f"{s.get('render_s', float('nan')):.2f}",
             f"{s['update_s']:.2f}", f"{s['tokens']:.1f}"] for m, s in summary.items() if isinstance(s, dict)]
    print(common.table(rows, ["method", "step s", "rollout s", "render s", "update s", "tokens"]))
    if "ratio_diffro_over_grpo" in summary:
        print(f"DiffRO / GRPO step time: {summary['ratio_diffro_over_grpo']:.3f}")
    result = {"benchmark": "diffro_step", "args": asdict(args), "machine": common.machine(args.threads),
              "runs": runs, "summary": summary}
    print("wrote", common.write_result("diffro_step", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
