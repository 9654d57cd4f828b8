"""Reward throughput: in-process ``make_reward`` vs the reward service (one server process) over HTTP.

    python benchmarks/reward_service.py [--samples 256] [--batch-size 32] [--repeats 3] ...

For each reward (``bleu``: cheap, pure Python; ``embedding_similarity``: MiniLM forward passes) the
same ``--samples`` hypothesis/reference pairs are scored three ways, side by side in one run:

- ``in_process``: ``make_reward({name: 1})`` called once on all samples, as the GRPO trainer does;
- ``service_c1``: :class:`~speechrl.rewards.service.RemoteReward` against a server started with
  ``python -m speechrl.rewards.service`` (``--workers`` scoring threads), batches of
  ``--batch-size``, one request in flight;
- ``service_c4``: the same, four requests in flight.

The hypotheses are the references of grammar stories with one word dropped or swapped (seeded), so
every reward does its real work. Each side gets one warm-up call (the server and this process each
load MiniLM once), then the sides alternate order for ``--repeats`` rounds; the medians in samples/s
are reported, and the ratio service ÷ in-process (> 1: the service is faster). Before timing, the
script checks that the service returns the in-process values.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub

from speechrl.config import doc
from speechrl.corpus.grammar import generate_stories
from speechrl.rewards import make_reward
from speechrl.rewards.service import RemoteReward

MODES = ("in_process", "service_c1", "service_c4")


@dataclass
class Args:
    samples: int = doc("hypothesis/reference pairs per call", 256)
    batch_size: int = doc("samples per request to the service", 32)
    repeats: int = doc("timed rounds per mode, after one warm-up call", 3)
    rewards: list[str] = doc("rewards to measure, one at a time", default_factory=lambda: ["bleu", "embedding_similarity"])
    workers: int = doc("scoring threads of the server", 4)
    threads: int = doc("torch intra-op threads, here and in the server", 1)
    seed: int = doc("seed for the texts", 0)
    out: str = doc("result file (default benchmarks/results/reward_service.json)", "")


def texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """(hypotheses, references): grammar-story sentences, each hypothesis with one word dropped or swapped."""
    rng = random.Random(seed)
    refs = [s.text for story in generate_stories(max(1, n // 4), seed) for s in story.sentences]
    refs = (refs * (n // max(1, len(refs)) + 1))[:n]
    vocab = sorted({w for r in refs for w in r.split()})
    hyps = []
    for ref in refs:
        words = ref.split()
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words.pop(i)
        else:
            words[i] = rng.choice(vocab)
        hyps.append(" ".join(words))
    return hyps, refs


def start_service(reward: str, workers: int, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "speechrl.rewards.service", "--rewards", json.dumps({reward: 1.0}),
                             "--port", "0", "--workers", str(workers), "--max-batch", str(max_batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the reward service did not start: {line}{proc.stdout.read()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, match.group(0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.splitlines()[0], argv)
    common.set_threads(args.threads)
    hyps, refs = texts(args.samples, args.seed)
    prompts = ["Transcribe the audio."] * len(hyps)
    summary: dict[str, Any] = {}
    times: dict[str, dict[str, list[float]]] = {}
    for name in args.rewards:
        proc, url = start_service(name, args.workers, args.batch_size, args.threads)
        try:
            sides = {"in_process": make_reward({name: 1.0}),
                     "service_c1": RemoteReward(url, timeout_s=120, batch_size=args.batch_size, concurrency=1),
                     "service_c4": RemoteReward(url, timeout_s=120, batch_size=args.batch_size, concurrency=4)}
            warm = {mode: fn(prompts, hyps, reference=refs) for mode, fn in sides.items()}  # loads MiniLM on both sides
            max_diff = max(abs(a - b) for mode in MODES[1:] for a, b in zip(warm[mode], warm["in_process"]))
            if max_diff > 1e-6:
                raise AssertionError(f"{name}: the service differs from in-process by {max_diff}")
            times[name] = {mode: [] for mode in MODES}
            for r in range(args.repeats):
                order = MODES if r % 2 == 0 else MODES[::-1]
                for mode in order:
                    t0 = time.perf_counter()
                    sides[mode](prompts, hyps, reference=refs)
                    times[name][mode].append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        sps = {mode: len(hyps) / common.median(times[name][mode]) for mode in MODES}
        summary[name] = {**{f"{m}_samples_per_s": round(v, 1) for m, v in sps.items()},
                         "ratio_c1": round(sps["service_c1"] / sps["in_process"], 3),
                         "ratio_c4": round(sps["service_c4"] / sps["in_process"], 3),
                         "max_abs_diff": max_diff}

    rows = [[name, f"{s['in_process_samples_per_s']:.0f}", f"{s['service_c1_samples_per_s']:.0f}",
             f"{s['service_c4_samples_per_s']:.0f}", f"{s['ratio_c1']:.2f}", f"{s['ratio_c4']:.2f}"]
            for name, s in summary.items()]
    print(common.table(rows, ["reward", "in-process /s", "service c=1 /s", "service c=4 /s", "ratio c=1", "ratio c=4"]))
    print(f"\n{args.samples} samples per call, batches of {args.batch_size}, server workers {args.workers}, "
          f"{args.threads} torch thread(s); ratio = service ÷ in-process samples/s (> 1: the service is faster)")
    result = {"benchmark": "reward_service", "args": asdict(args), "machine": common.machine(args.threads),
              "summary": summary, "times_s": times}
    path = common.write_result("reward_service", result, args.out or None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
