"""Run logging to Weights & Biases when configured (``WANDB_PROJECT``), in offline mode: the same
records reach a local W&B run, and a resumed run continues the same W&B run id."""

import json

import pytest

from speechrl.runlog import MetricsLogger, read_metrics


def test_wandb_offline_run_gets_the_records_and_resumes_the_same_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_PROJECT", "speechrl-test")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    log = MetricsLogger(out, tensorboard=False)
    log.log({"loss": 0.5, "reward": float("nan")}, step=1, stage="grpo")  # NaN: left out of W&B, kept in JSONL
    log.log({"dev_wer": 0.25}, step=1, stage="grpo")
    run_id = (out / "wandb_id.txt").read_text().strip()
    assert log._wandb.id == run_id and log._wandb.summary["grpo/loss"] == 0.5
    assert log._wandb.summary["grpo/dev_wer"] == 0.25 and "grpo/reward" not in log._wandb.summary.keys()
    log.close()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))  # the run's records on disk
    again = MetricsLogger(out, tensorboard=False)  # a resumed run
    assert again._wandb.id == run_id
    again.close()
    assert [m.get("loss") for m in read_metrics(out / "metrics.jsonl")] == [0.5, None]
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["reward"] is None
    assert wandb.run is None  # finished


def test_wandb_not_installed_or_not_configured_means_jsonl_only(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log({"loss": 1.0}, step=1)
    assert log._wandb is None and not (tmp_path / "wandb_id.txt").exists()
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *a, **kw):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *a, **kw)

    monkeypatch.setenv("WANDB_PROJECT", "p")
    monkeypatch.setattr(builtins, "__import__", no_wandb)
    log = MetricsLogger(tmp_path / "b", tensorboard=False)  # a warning, not a crash
    log.log({"loss": 2.0}, step=1)
    assert log._wandb is None and read_metrics(tmp_path / "b" / "metrics.jsonl")[0]["loss"] == 2.0
