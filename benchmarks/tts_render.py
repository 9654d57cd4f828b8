"""The render stage of a TTS GRPO step (speech units → Piper → Whisper tiny.en → rewards), three ways.

    python benchmarks/tts_render.py --run RUN [--texts 8] [--group 8] [--windows [10, 8]] [--threads 2]

``RUN``: a finished ``tts_rl`` run folder (its SFT model samples the clips, as a GRPO step does: ``--texts``
of its RL prompts × ``--group`` samples at ``--temperature``). The same clips are rendered by

- ``sequential``: one clip at a time through the vocoder, Whisper's 30 s window (the renderer before the
  batch path; every clip's audio is the same either way);
- ``batch``: :class:`~speechrl.rewards.tts.UnitRenderer` — Piper speaks ``--threads`` clips at once;
- ``window W``: the batch path with the reward transcriber's encoder window cut to W seconds
  (``rl.reward_window_s``; dev and test keep 30 s).

Passes alternate in order every repeat, the first ``--warmup`` not counted; medians reported, ratio =
sequential ÷ way (> 1: faster). Agreement with the 30 s transcripts: the share of equal transcripts, the
samples' mean WER, and the within-group Spearman ρ of the samples' WER — what the group advantages see.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub

import numpy as np
import torch
from scipy.stats import spearmanr

from speechrl.config import doc
from speechrl.pipelines.tts_rl import TTSRLRecipe, sft_policy, splits
from speechrl.rewards.tts import UnitRenderer
from speechrl.runfolder import read_config
from speechrl.speech.transcribe import make_transcriber
from speechrl.text import sentence_wer


@dataclass
class Args:
    run: str = doc("a finished tts_rl run folder", "", path="exists")
    texts: int = doc("RL prompts sampled", 8, ge=1)
    group: int = doc("samples per text (G)", 8, ge=2)
    temperature: float = doc("sampling temperature of the rollout", 0.7, gt=0)
    windows: list[float] = doc("reward encoder windows compared with 30 s, seconds",
                               default_factory=lambda: [10.0, 8.0])
    repeats: int = doc("timed passes per way, after the warm-up", 2, ge=1)
    warmup: int = doc("passes per way run first and not counted", 1, ge=0)
    threads: int = doc("torch threads (Piper clips at once) and CTranslate2 threads", 2, ge=1)
    seed: int = doc("seed of the samples", 0)
    out: str = doc("result file (default benchmarks/results/tts_render.json)", "")


def samples(run: Path, args: Args) -> tuple[list[str], list[Any]]:
    """``texts`` × ``group`` sampled units of the run's SFT model, its RL prompts in order."""
    recipe = read_config(run, TTSRLRecipe, [])
    _, prompts, _ = splits(recipe)
    policy = sft_policy(run, recipe)
    texts = [t for t in prompts[:args.texts] for _ in range(args.group)]
    torch.manual_seed(args.seed)
    with torch.no_grad():
        ids = policy.eval().generate(policy.encode(texts), 128, temperature=args.temperature)
    return texts, policy.to_units(ids)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    common.set_threads(args.threads)
    texts, units = samples(Path(args.run), args)
    batch = UnitRenderer(transcriber=make_transcriber("whisper-tiny", cpu_threads=args.threads))
    ways = {"sequential": lambda: batch.transcribe([batch.vocoder.render(u) for u in units]),
            "batch": lambda: batch(units)[1],
            **{f"window {w:g}": (lambda r: lambda: r(units)[1])(batch.windowed(w)) for w in args.windows}}
    times: dict[str, list[float]] = {k: [] for k in ways}
    hyps: dict[str, list[str]] = {}
    for rep in range(args.warmup + args.repeats):
        for name in (list(ways) if rep % 2 == 0 else list(ways)[::-1]):
            t0 = time.perf_counter()
            hyps[name] = ways[name]()
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    g = args.group
    wers = {k: np.array([sentence_wer(t, h) for t, h in zip(texts, v)]).reshape(-1, g) for k, v in hyps.items()}
    base = common.median(times["sequential"])
    summary = {}
    for k in ways:
        rho = [spearmanr(a, b)[0] for a, b in zip(wers["batch"], wers[k]) if a.std() > 0 and b.std() > 0]
        summary[k] = {"seconds": round(common.median(times[k]), 2), "ratio": round(base / common.median(times[k]), 2),
                      "sample_wer": round(float(wers[k].mean()), 4),
                      "same_as_30s": round(sum(a == b for a, b in zip(hyps["batch"], hyps[k])) / len(texts), 3),
                      "within_group_spearman": round(float(np.mean(rho)), 3) if rho else None}
    print(f"{len(units)} clips ({args.texts} texts × G {g}), {args.threads} threads")
    print(common.table([[k, s["seconds"], s["ratio"], s["sample_wer"], s["same_as_30s"], s["within_group_spearman"]]
                        for k, s in summary.items()],
                       ["way", "time s", "sequential ÷ way", "sample WER", "same as 30 s", "ρ vs 30 s"]))
    result = {"args": asdict(args), "machine": common.machine(args.threads), "times": times, "summary": summary}
    print("wrote", common.write_result("tts_render", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
