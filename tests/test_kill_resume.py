"""Kill -9 a training run once a checkpoint exists, run it again, and get the uninterrupted run back.

For each trainer: an uninterrupted run, and a run that is sent SIGKILL once
``checkpoints/step-<kill_after>`` exists and the next step is logged, then started again in the same
folder. The resumed
run must log exactly the uninterrupted run's metrics (the last record of each step counts: the steps
between the checkpoint and the kill are logged twice) and end with bit-identical weights, optimizer
state, RNG state, best weights and result. Exact equality holds on CPU because every run is a
single-threaded process with the same seed, batch order and RNG state restored from the checkpoint;
only wall-clock fields (``time``, ``*_s``) are left out of the comparison.

Each run is its own process, started by multiprocessing's fork server: a fresh interpreter that has
imported torch, transformers and the trainers once and forks a child per run (a new interpreter per
run would spend 6–12 s on imports on a loaded 2-core runner; forking the test process itself can
deadlock on thread pools it has used). The child first re-seeds Python, NumPy and torch from
``os.urandom``, so randomness a trainer forgot to seed differs between runs as it would in fresh
interpreters. Nothing but the run folder passes from the killed process to the resumed one.

Trainers: SFT, GRPO, DPO, next-unit LM pretraining, TTS SFT, and the TTS RL trainer in its combined GRPO + DiffRO mode (both losses, sample
filtering). Adding a trainer is one entry in ``CASES``.
"""

import importlib
import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_policy
from speechrl import checkpoint
from speechrl import config as C
from speechrl.runlog import MetricsLogger, read_json, read_metrics


@dataclass(frozen=True)
class Case:
    """One trainer under test, called as ``trainer(*inputs(*fixtures), cfg, out_dir, logger)``."""

    trainer: str                      # "module:function"
    config: str                       # "module:ConfigClass", built from ``settings`` by speechrl.config
    settings: dict[str, Any]          # must set max_steps and checkpoint_every
    fixtures: tuple[str, ...]         # pytest fixtures whose values ``inputs`` receives (picklable)
    inputs: Callable[..., tuple]      # module-level: → the positional arguments before cfg (in the child)
    kill_after: int                   # SIGKILL once this step's checkpoint exists and the next is logged


def speech_task_inputs(asr) -> tuple:
    return (make_tiny_policy(), *asr, "asr")


def unit_pair_inputs() -> tuple:
    """A tiny random unit LM and preference pairs (chosen: counting up; rejected: a fixed shuffle)."""
    from speechrl.models.unit_lm import UnitLM

    torch.manual_seed(0)
    model = UnitLM.from_scratch(num_units=8, hidden_size=32, layers=1, heads=2)
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(24):
        start = int(rng.integers(0, 8))
        chosen = [(start + i) % 8 for i in range(6)]
        pairs.append(([start], chosen, rng.permutation(chosen).tolist()))
    return model, pairs[:16], pairs[16:]



def diffro_inputs() -> tuple:
    """Tiny random TTS LM and Token2Text, four texts (as in tests/test_tts_rl.py)."""
    from test_tts_models import tiny_token2text, tiny_tts_lm
    from test_tts_rl import TEXTS

    torch.manual_seed(0)
    return tiny_tts_lm(), tiny_token2text(), TEXTS, []


def train_diffro(policy, token2text, prompts, dev, cfg, out_dir, logger):
    """DiffRO with the stand-in renderer of tests/test_tts_rl.py (the real Piper + Whisper run in the
    recipe test; DiffRO's loss does not render)."""
    from test_tts_rl import FakeRenderer

    from speechrl.eval.tts import DecodeConfig
    from speechrl.trainers.tts_rl import train_tts_rl

    return train_tts_rl(policy, token2text, prompts, dev, cfg, out_dir, logger, renderer=FakeRenderer(),
                        decode=DecodeConfig(max_new_tokens=6))



def unit_lm_inputs() -> tuple:
    model, pairs, _ = unit_pair_inputs()
    seqs = [list(prompt) + list(chosen) for prompt, chosen, _ in pairs]
    return model, seqs[:12], seqs[12:]


def tts_sft_inputs() -> tuple:
    from test_tts_models import tiny_tts_lm
    from test_tts_rl import examples

    torch.manual_seed(0)  # the same tiny TTS LM as diffro_inputs, without building a Token2Text
    train = examples()
    return tiny_tts_lm(), train, train[:2]


CASES = {
    "sft": Case(
        "speechrl.trainers.sft:train_sft", "speechrl.trainers.sft:SFTConfig",
        {"batch_size": 4, "max_steps": 6, "checkpoint_every": 2, "eval_every": 4, "patience": 10,
         "dev_examples": 2, "max_tokens": 8, "lr": 3e-3, "warmup_steps": 2, "train_embeddings": True},
        ("asr",), speech_task_inputs, kill_after=2),
    "grpo": Case(
        "speechrl.trainers.grpo:train_grpo", "speechrl.trainers.grpo:SpeechGRPOConfig",
        {"rewards": {"accuracy_wer": 1.0, "hallucination": 0.5}, "group_size": 4, "prompts_per_step": 2,
         "max_steps": 6, "checkpoint_every": 2, "eval_every": 4, "dev_examples": 2, "max_new_tokens": 8,
         "lr": 1e-2, "beta": 0.02, "num_iterations": 2, "dynamic_sampling": True,
         "lora": {"r": 4, "alpha": 8}},
        ("asr",), speech_task_inputs, kill_after=2),
    "dpo": Case(
        "speechrl.trainers.dpo:train_dpo", "speechrl.trainers.dpo:DPOConfig",
        {"batch_size": 4, "max_steps": 6, "checkpoint_every": 2, "eval_every": 4, "lr": 1e-2,
         "lora": {"r": 4, "alpha": 8}},
        (), unit_pair_inputs, kill_after=2),
    "unit_lm": Case(
        "speechrl.trainers.unit_lm:train_unit_lm", "speechrl.trainers.sft:SFTConfig",
        {"batch_size": 4, "max_steps": 6, "checkpoint_every": 2, "eval_every": 4, "lr": 1e-2, "warmup_steps": 1,
         "patience": 0, "max_tokens": 256},
        (), unit_lm_inputs, kill_after=2),
    "tts_sft": Case(
        "speechrl.trainers.tts_sft:train_tts_lm", "speechrl.trainers.sft:SFTConfig",
        {"batch_size": 2, "max_steps": 6, "checkpoint_every": 2, "eval_every": 4, "warmup_steps": 1,
         "patience": 10, "dev_examples": 2, "max_tokens": 12},
        (), tts_sft_inputs, kill_after=2),
    "diffro": Case(
        "test_kill_resume:train_diffro", "speechrl.trainers.tts_rl:TTSRLConfig",
        {"method": "combined", "group_size": 2, "prompts_per_step": 2, "max_steps": 6, "max_new_tokens": 6,
         "dev_examples": 0, "checkpoint_every": 2, "lr": 1e-2, "lora": {"r": 4, "alpha": 8}},
        (), diffro_inputs, kill_after=2),
}



@pytest.fixture(scope="module")
def asr(unit_features):
    from speechrl.data.tasks import task_examples

    rows, feats = unit_features
    train = task_examples([r for r in rows if r["split"] == "train"], "asr")
    dev = task_examples([r for r in rows if r["split"] == "dev"], "asr")
    return train, dev, feats


def _import(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _train(case: Case, fixtures: tuple, out_dir) -> None:
    """The child process: fresh random state, then the trainer, to the end or until killed."""
    seed = int.from_bytes(os.urandom(4), "little")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cfg = C.from_dict(_import(case.config), case.settings)
    _import(case.trainer)(*case.inputs(*fixtures), cfg, out_dir, MetricsLogger(out_dir, tensorboard=False))


def _start(case: Case, fixtures: tuple, out_dir) -> multiprocessing.Process:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["conftest", "pytest", "speechrl.checkpoint", "speechrl.config",
                                *{spec.split(":")[0] for c in CASES.values() for spec in (c.trainer, c.config)}])
    proc = ctx.Process(target=_train, args=(case, fixtures, out_dir))
    proc.start()
    return proc


def _finish(proc: multiprocessing.Process, timeout: float = 300) -> None:
    proc.join(timeout)
    assert proc.exitcode == 0, f"training process ended with {proc.exitcode}"


def _kill_after_checkpoint(proc: multiprocessing.Process, out_dir, step: int, timeout: float = 300) -> None:
    """SIGKILL once checkpoint ``step`` exists and step ``step + 1`` is logged: the kill lands between
    two checkpoints, after work that the resumed run must redo identically."""
    checkpoint_dir = out_dir / "checkpoints" / f"step-{step:07d}"
    deadline = time.monotonic() + timeout
    while not (checkpoint_dir.is_dir() and _train_steps(out_dir).count(step + 1)):
        assert proc.is_alive(), f"the run ended (exit {proc.exitcode}) before step {step + 1} was logged"
        assert time.monotonic() < deadline, f"no step {step + 1} after {timeout} s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL


def _wall_clock(key: str) -> bool:
    return key == "time" or key.endswith("_s")


def _train_steps(out_dir) -> list[int]:
    """Steps of the training records logged so far (read while the run may be mid-write)."""
    return [r["step"] for r in read_metrics(out_dir / "metrics.jsonl")
            if "step" in r and not any(k.startswith("dev_") for k in r)]


def _logged(out_dir) -> dict[tuple, dict]:
    """The metric records by (stage, step, train/dev), the last record of each winning."""
    rows = {}
    for row in read_metrics(out_dir / "metrics.jsonl"):
        kind = "dev" if any(k.startswith("dev_") for k in row) else "train"
        rows[row.get("stage"), row.get("step"), kind] = {k: v for k, v in row.items() if not _wall_clock(k)}
    return rows


def _tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_tensors(a, b) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys(), a
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{b} differs from {a} in {different[:5]}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_killed_run_resumes_to_the_uninterrupted_result(name, request, tmp_path):
    case = CASES[name]
    fixtures = tuple(request.getfixturevalue(f) for f in case.fixtures)
    last = case.settings["max_steps"]
    assert case.kill_after < last and last % case.settings["checkpoint_every"] == 0
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    reference = _start(case, fixtures, whole)  # runs alongside; each run is single-threaded
    victim = _start(case, fixtures, killed)
    _kill_after_checkpoint(victim, killed, case.kill_after)
    resume_from = int(checkpoint.latest(killed).name.split("-")[1])
    assert not (killed / "result.json").exists() and resume_from < last
    logged_before = _train_steps(killed)
    _finish(_start(case, fixtures, killed))  # the rerun picks up the latest checkpoint
    _finish(reference)
    # the steps logged after the checkpoint are logged again, then the run goes on to the end
    assert _train_steps(killed) == logged_before + list(range(resume_from + 1, last + 1))

    logged, expected = _logged(killed), _logged(whole)
    assert logged == expected
    assert sum(1 for _, step, kind in expected if kind == "train") == last
    final = f"checkpoints/step-{last:07d}"
    for file in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        _assert_same_tensors(whole / final / file, killed / final / file)
    state_whole, state_killed = read_json(whole / final / "state.json"), read_json(killed / final / "state.json")
    for state in (state_whole, state_killed):
        state["state"].pop("train_s")
    assert state_killed == state_whole
    best = "best/model.safetensors"
    assert (whole / best).is_file() == (killed / best).is_file()
    if (whole / best).is_file():  # trainers without dev evaluation (the DiffRO case here) keep no best weights
        _assert_same_tensors(whole / best, killed / best)
    result_whole, result_killed = read_json(whole / "result.json"), read_json(killed / "result.json")
    assert {k: v for k, v in result_killed.items() if not _wall_clock(k)} == \
        {k: v for k, v in result_whole.items() if not _wall_clock(k)}
