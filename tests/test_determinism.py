"""Same command, same numbers: the Align-SLM recipe at tiny settings, run twice in fresh processes with
empty caches — once on 1 torch thread, once on 2 — computes the same corpus, units, benchmark units,
unit-LM weights, candidates, pairs, DPO weights and sampled continuations (the fingerprints in
``summary.json``), and reports the same metrics to the last bit. Timings are left out."""

import json
import os
import subprocess
import sys
from pathlib import Path


from speechrl.fingerprint import compare

REPO = Path(__file__).resolve().parents[1]
TINY = ["corpus.size=30", "corpus.evaluate=false", "model.layers=1",  # SmolLM2's first layer: real-size matmuls
        "pretrain.max_steps=6", "pretrain.eval_every=3", "pretrain.batch_size=4", "pretrain.dev_examples=8",
        "curriculum.prompts_per_round=4", "curriculum.chosen_min=[0.6,0.8]", "sampling.n=3",
        "sampling.max_new_units=12", "dpo.epochs=1", "dpo.batch_size=2", "benchmarks.pairs=3", "test_prompts=3",
        "eval_continuations=1", "samples=2", "control=false",
        "long_form.stories=2", "long_form.dev_stories=1"]  # the recipe's words, lexicon and story text included


def start_fresh(tmp: Path, name: str, threads: int) -> tuple[subprocess.Popen, Path]:
    """`speechrl run` in a new process with its own empty cache, its stderr in ``<out>.log``."""
    out = tmp / name
    env = {**os.environ, "SPEECHRL_CACHE": str(tmp / f"cache-{name}"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "speechrl.cli", "run", "recipes/align_slm.yaml", "--out", str(out),
            "--threads", str(threads)] + [a for kv in TINY for a in ("--set", kv)]
    with open(tmp / f"{name}.log", "w") as log:
        return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log), out


def finished(proc: subprocess.Popen, out: Path, threads: int) -> dict:
    """The run's summary.json, once its process has ended well."""
    proc.wait(timeout=900)
    assert proc.returncode == 0, out.with_suffix(".log").read_text()[-3000:]
    assert json.loads((out / "run.json").read_text())["threads"] == threads
    return json.loads((out / "summary.json").read_text())


def without_timings(metrics: dict) -> dict:
    return {system: {k: v for k, v in m.items() if not k.endswith("_s")} for system, m in metrics.items()}


def test_align_slm_same_numbers_at_1_and_2_threads(tmp_path):
    # side by side (their numbers must not depend on timing either): the pair takes ≈ 2/3 of running them in turn
    started = start_fresh(tmp_path, "one", 1), start_fresh(tmp_path, "two", 2)
    one, two = (finished(proc, out, threads) for (proc, out), threads in zip(started, (1, 2)))
    stages = {"corpus", "units", "benchmarks", "unit_lm", "round1 candidates", "round1 pairs", "round2 candidates",
              "round2 pairs", "test base", "test round2"}
    assert stages <= set(one["fingerprints"]), one["fingerprints"]
    assert compare(one, two) == [], {k: (one["fingerprints"].get(k), two["fingerprints"].get(k))
                                     for k in compare(one, two)}
    assert without_timings(one["metrics"]) == without_timings(two["metrics"])
    assert one["intervals"] == two["intervals"]


def test_a_first_time_model_conversion_leaves_the_callers_random_stream_alone(monkeypatch):
    """A seeded model built on an offline name gets the same weights whether or not this process converted
    that model first (the conversion initialises a model object, which draws from torch's stream)."""
    import torch

    from speechrl.models import hub

    def convert() -> Path:  # what a first-time conversion does to the stream
        torch.nn.Linear(64, 64)
        return Path("converted")

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    convert()
    assert not torch.equal(torch.rand(3), expected)  # the conversion does move an unforked stream
    monkeypatch.setitem(hub.OFFLINE, "a-model", convert)
    torch.manual_seed(0)
    assert hub.resolve("a-model") == "converted"
    assert torch.equal(torch.rand(3), expected)
