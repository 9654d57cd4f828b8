"""Training throughput, 1 process vs 2 processes (DDP, gloo on CPU), same global batch.

    python benchmarks/ddp_throughput.py [--steps 8] [--batch-size 8] [--layers 4] [--repeats 2]

The real SFT trainer (``train_sft``) on the demo's speech policy (SmolLM2-135M cut to ``--layers``
decoder layers, phoneme-unit front end) and the demo corpus (built and featurised once, cached), for
``--steps`` steps with a global batch of ``--batch-size`` utterances, launched by
``accelerate launch --multi_gpu --num_processes N`` for N = 1 and 2 (on a machine without CUDA the
trainer joins a gloo group). With 2 processes each rank trains on half of every global batch (the
data is sharded) and DDP all-reduces the gradients. Each process runs ``threads`` // N intra-op
threads, so both sides use the same cores.

Throughput = completion tokens trained on ÷ training time, from the trainer's own log (``tokens`` and
``step_s`` of each step, reduced over the ranks), the first ``--warmup`` steps dropped. The sides
alternate order for ``--repeats`` rounds; the medians and the ratio 2 ÷ 1 are reported (> 1: two
processes are faster). On a 2-core machine this measures DDP's overhead more than its gain: the
point is the mechanism, the number to read on a multi-GPU node is the same script's ratio there.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub

from speechrl.config import doc
from speechrl.parallel import local_launch_command


@dataclass
class Args:
    steps: int = doc("training steps per run (after --warmup)", 8)
    warmup: int = doc("first steps left out of the timing", 2)
    batch_size: int = doc("global batch (utterances per step, split over the processes)", 8)
    layers: int = doc("decoder layers of SmolLM2-135M kept", 4)
    threads: int = doc("intra-op threads in all (each of N processes gets threads // N)", 2)
    repeats: int = doc("timed rounds per side", 2)
    corpus_size: int = doc("stories of the (cached) corpus", 600)
    out: str = doc("result file (default benchmarks/results/ddp_throughput.json)", "")


def worker(cfg_json: str, out: str) -> None:
    """One rank: SFT for the configured steps; rank 0's log holds the reduced tokens and step times."""
    args = Args(**json.loads(cfg_json))
    import torch

    from speechrl.corpus.build import CorpusConfig
    from speechrl.data.features import features
    from speechrl.data.tasks import task_examples
    from speechrl.parallel import process_state
    from speechrl.pipelines.common import corpus_rows
    from speechrl.pipelines.speech_grpo import ModelConfig, new_policy
    from speechrl.runlog import MetricsLogger
    from speechrl.trainers.sft import SFTConfig, train_sft

    state = process_state()
    torch.set_num_threads(max(1, args.threads // state.num_processes))
    folder, rows = corpus_rows(CorpusConfig(size=args.corpus_size, seed=1))
    feats = features(folder, rows, "units")
    train = task_examples([r for r in rows if r["split"] == "train" and r["id"] in feats], "asr")
    dev = task_examples([r for r in rows if r["split"] == "dev" and r["id"] in feats], "asr")
    policy = new_policy(ModelConfig(decoder_layers=args.layers))
    steps = args.steps + args.warmup
    cfg = SFTConfig(batch_size=args.batch_size, max_steps=steps, eval_every=10**6, dev_examples=1,
                    checkpoint_every=10**6, warmup_steps=0, lr=1e-4)
    train_sft(policy, train, dev, feats, "asr", cfg, Path(out) / "sft", MetricsLogger(out, tensorboard=False))


def run_side(args: Args, processes: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"ddp{processes}-"))
    cmd = local_launch_command(__file__, ["--worker", json.dumps(asdict(args)), str(out)], processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // processes)), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{processes}-process run failed:\n{proc.stderr[-4000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tokens" in r][args.warmup:]
    shutil.rmtree(out, ignore_errors=True)
    tokens, seconds = sum(r["tokens"] for r in steps), sum(r["step_s"] for r in steps)
    return {"processes": processes, "steps": len(steps), "tokens": tokens, "train_s": round(seconds, 3),
            "tokens_per_s": tokens / seconds, "loss_last": steps[-1]["loss"]}


def main() -> None:
    args = common.parse_args(Args, __doc__.split("\n\n")[0])
    from speechrl.corpus.build import CorpusConfig
    from speechrl.data.features import features
    from speechrl.pipelines.common import corpus_rows

    folder, rows = corpus_rows(CorpusConfig(size=args.corpus_size, seed=1))  # built and featurised once, untimed
    features(folder, rows, "units")
    runs = []
    for r in range(args.repeats):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs.append(run_side(args, n))
            print(f"round {r}: {n} process(es): {runs[-1]['tokens_per_s']:.1f} tokens/s", flush=True)
    med = {n: statistics.median(x["tokens_per_s"] for x in runs if x["processes"] == n) for n in (1, 2)}
    summary = {"tokens_per_s_1proc": round(med[1], 1), "tokens_per_s_2proc": round(med[2], 1),
               "ratio_2_over_1": round(med[2] / med[1], 3)}
    print(common.table([[n, f"{med[n]:.1f}"] for n in (1, 2)], ["processes", f"tokens/s (median of {args.repeats})"]))
    print(f"ratio 2 ÷ 1 = {summary['ratio_2_over_1']}")
    path = common.write_result("ddp_throughput", {"args": asdict(args), "machine": common.machine(args.threads),
                                                  "runs": runs, "summary": summary}, args.out or None)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
