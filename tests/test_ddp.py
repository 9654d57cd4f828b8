"""Training under DDP on CPU: ``accelerate launch --multi_gpu --num_processes 2`` (torchrun; on a
machine without CUDA the trainer's ``Accelerator(cpu=True)`` joins a gloo process group) against one
process. (``--cpu`` with several processes means mpirun in accelerate 1.15, not installed here.)

* SFT with the data sharded: 2 ranks × 2 examples of each global batch of 4 ≡ 1 process × 4 — the
  loss is normalised by the global batch's token count, so the DDP-averaged gradient is the global
  one; losses and weights agree within ``LOSS_RTOL`` (the order of float sums differs).
* A corrupt audio file that only rank 1 meets (each rank reads its own copy of the corpus, as nodes
  with local disks do): featurisation finishes on both ranks, both report the same skip, training
  runs on the same remaining data, and nothing hangs.
* A user's manifest with bad rows: every rank keeps the same rows; the main process records the rest.

Run as a script, the file is the worker that ``accelerate launch`` starts on each rank.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

STEPS = 6
SFT = {"batch_size": 4, "max_steps": STEPS, "eval_every": 1000, "dev_examples": 2, "max_tokens": 8,
       "checkpoint_every": 1000, "lr": 3e-3, "warmup_steps": 0, "train_embeddings": True}
LOSS_RTOL = 1e-4  # float32: two half-batch sums all-reduced vs one sum over the batch, and the
#                   launcher's thread count — rounding differences far below this


def run_worker(corpus: str, out: str, steps: int = STEPS) -> dict:
    """Train the tiny policy with SFT on the corpus (``{rank}`` in its path: this rank's own copy);
    each rank writes ``ddp{rank}.json`` into ``out`` (checkpoints and metrics: rank 0 only)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_policy
    from speechrl.corpus.build import load_manifest
    from speechrl.data.features import features
    from speechrl.data.tasks import task_examples
    from speechrl.parallel import process_state
    from speechrl.runlog import MetricsLogger, read_metrics, write_json
    from speechrl.trainers import sft
    from speechrl.trainers.sft import SFTConfig, train_sft

    seen: list[str] = []  # the training examples this rank computed a loss on
    nll = sft.sft_nll
    sft.sft_nll = lambda model, policy, examples, *a: (seen.extend(e.id for e in examples),
                                                      nll(model, policy, examples, *a))[1]
    state = process_state()
    corpus = corpus.replace("{rank}", str(state.process_index))
    rows = load_manifest(corpus)
    feats = features(corpus, rows, "units", workers=1)
    train = task_examples([r for r in rows if r["split"] == "train" and r["id"] in feats], "asr")
    dev = task_examples([r for r in rows if r["split"] == "dev" and r["id"] in feats], "asr")
    policy = make_tiny_policy()
    out = Path(out)
    train_sft(policy, train, dev, feats, "asr", SFTConfig(**{**SFT, "max_steps": steps}), out / "sft",
              MetricsLogger(out, tensorboard=False))
    params = torch.cat([p.detach().flatten() for p in policy.parameters() if p.requires_grad])
    result = {"rank": state.process_index, "world_size": state.num_processes,
              "distributed_type": str(state.distributed_type), "backend": state.backend,
              "losses": [m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m],
              "skipped": sorted(r["id"] for r in rows if r["id"] not in feats), "train_size": len(train), "seen": seen,
              "params_sum": float(params.double().sum()), "params_abs_sum": float(params.double().abs().sum())}
    write_json(out / f"ddp{state.process_index}.json", result)
    return result


def run_grpo_worker(corpus: str, out: str, steps: int = 2) -> dict:
    """GRPO (B = 4 prompts per step, G = 4) on the tiny policy. The reward is rigged per rank so that at
    step 1 rank 1's groups are all zero-variance (dynamic sampling keeps nothing there) while rank 0's
    are not: rank 1 must still join the update or DDP would hang."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_policy
    from speechrl.corpus.build import load_manifest
    from speechrl.data.features import features
    from speechrl.data.tasks import task_examples
    from speechrl.parallel import process_state
    from speechrl.runlog import MetricsLogger, read_metrics, write_json
    from speechrl.trainers import grpo
    from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
    from speechrl.trainers.lora import LoRAConfig

    state = process_state()
    seen: list[list[str]] = []

    class Rigged:  # rank 0: reward = completion length (varies); rank 1 at step 1: constant
        def __call__(self, prompts, completions, **columns):
            seen.append(sorted(set(columns["reference"])))
            if state.process_index == 1 and len(seen) == 1:
                return [0.5] * len(completions)
            return [float(len(c)) / 10 for c in completions]

        def metrics(self):
            return {"rewards/rigged_calls": float(len(seen))}

    grpo.make_reward = lambda spec: Rigged()
    rows = load_manifest(corpus)
    feats = features(corpus, rows, "units", workers=1)
    train = task_examples([r for r in rows if r["split"] == "train"], "asr")
    dev = task_examples([r for r in rows if r["split"] == "dev"], "asr")
    policy = make_tiny_policy()
    out = Path(out)
    cfg = SpeechGRPOConfig(group_size=4, prompts_per_step=4, max_steps=steps, max_new_tokens=8, eval_every=0, dev_examples=2,
                     checkpoint_every=1, lr=1e-2, beta=0.02, temperature=1.5, lora=LoRAConfig(r=4, alpha=8))
    result = train_grpo(policy, train, dev, feats, "asr", cfg, out / "grpo", MetricsLogger(out, tensorboard=False))
    params = torch.cat([p.detach().flatten() for n, p in policy.named_parameters() if "lora" in n])
    info = {"rank": state.process_index, "world_size": state.num_processes, "seen": seen, "result": result,
            "metrics": [m for m in read_metrics(out / "metrics.jsonl") if "kept_samples" in m],
            "params_abs_sum": float(params.double().abs().sum())}
    write_json(out / f"ddp{state.process_index}.json", info)
    return info


def run_unit_worker(_corpus: str, out: str, steps: int = 4) -> dict:
    """LoRA-DPO and next-unit pretraining of a tiny unit LM (no corpus needed): the pairs and sequences
    of tests/test_dpo_trainer.py and test_unit_lm-style random sequences; rank 0 logs the losses."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from test_dpo_trainer import TRAIN, cfg, tiny_unit_lm
    from speechrl.parallel import process_state
    from speechrl.runlog import MetricsLogger, read_metrics, write_json
    from speechrl.trainers.dpo import train_dpo
    from speechrl.trainers.unit_lm import pretrain_config, train_unit_lm

    state, out = process_state(), Path(out)
    seqs = [[(i * 7 + j * (i % 5 + 1)) % 16 for j in range(12)] for i in range(64)]
    lm = tiny_unit_lm()
    train_unit_lm(lm, seqs, [], pretrain_config(lr=1e-2, batch_size=8, max_steps=steps, max_tokens=16,
                                                eval_every=100, checkpoint_every=100, warmup_steps=0), out / "unit_lm",
                  MetricsLogger(out, tensorboard=False))
    dpo_model = tiny_unit_lm()
    train_dpo(dpo_model, TRAIN, [], cfg(max_steps=steps, batch_size=8), out / "dpo", MetricsLogger(out, tensorboard=False))
    rows = read_metrics(out / "metrics.jsonl")
    info = {"rank": state.process_index,
            "lm_losses": [m["loss"] for m in rows if m.get("stage") == "unit_lm" and "loss" in m],
            "dpo_losses": [m["loss"] for m in rows if m.get("stage") == "dpo" and "loss" in m],
            "lm_abs": float(sum(p.detach().double().abs().sum() for p in lm.parameters() if p.requires_grad)),
            "dpo_abs": float(sum(p.detach().double().abs().sum() for p in dpo_model.parameters() if p.requires_grad))}
    write_json(out / f"ddp{state.process_index}.json", info)
    return info


def run_tts_worker(_corpus: str, out: str, steps: int = 3) -> dict:
    """TTS SFT of a tiny TTS LM (4 texts, every target 8 units: equal token counts per share, so the
    rank-averaged token mean is the global one), then DiffRO from it with a tiny Token2Text."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_tts_models import tiny_token2text, tiny_tts_lm
    from test_tts_rl import TEXTS, examples, rl_cfg
    from speechrl.parallel import process_state
    from speechrl.runlog import MetricsLogger, read_metrics, write_json
    from speechrl.trainers.tts_rl import train_tts_rl
    from speechrl.trainers.sft import SFTConfig
    from speechrl.trainers.tts_sft import train_tts_lm

    state, out = process_state(), Path(out)
    policy = tiny_tts_lm()
    sft = SFTConfig(lr=1e-2, new_lr=1e-2, batch_size=4, max_steps=steps, warmup_steps=0, eval_every=100,
                    dev_examples=2, max_tokens=16, checkpoint_every=100)
    train_tts_lm(policy, examples(), examples()[:2], sft, out / "sft", MetricsLogger(out, tensorboard=False))
    sft_abs = float(sum(p.detach().double().abs().sum() for p in policy.parameters() if p.requires_grad))
    train_tts_rl(policy, tiny_token2text(), TEXTS, [], rl_cfg(max_steps=steps), out / "diffro",
                 MetricsLogger(out, tensorboard=False))
    rows = read_metrics(out / "metrics.jsonl")
    info = {"rank": state.process_index, "sft_abs": sft_abs,
            "sft_losses": [m["loss"] for m in rows if m.get("stage") == "sft" and "loss" in m],
            "diffro_steps": len([m for m in rows if m.get("stage") == "diffro" and "loss" in m]),
            "rl_abs": float(sum(p.detach().double().abs().sum() for n, p in policy.named_parameters() if "lora" in n))}
    write_json(out / f"ddp{state.process_index}.json", info)
    return info


def run_rows_worker(manifest: str, out: str, _steps: int = 0) -> dict:
    """A recipe's data stage (``dataset_rows``) on a user's manifest; each rank writes the rows it kept
    (id, split) into ``ddp{rank}.json``; skipped rows go to ``out/rejected.jsonl``."""
    from speechrl.corpus.build import CorpusConfig
    from speechrl.data.sources import DataConfig
    from speechrl.parallel import process_state
    from speechrl.pipelines.common import dataset_rows
    from speechrl.runlog import write_json

    state = process_state()
    data = DataConfig(manifest=manifest, max_seconds=2.0)  # as tests/test_data_sources.py reads its bad-row table
    _, rows, report = dataset_rows(data, CorpusConfig(), "ast", Path(out))
    info = {"rank": state.process_index, "world_size": state.num_processes,
            "kept": [[r["id"], r["split"]] for r in rows], "report": report}
    write_json(Path(out) / f"ddp{state.process_index}.json", info)
    return info


def _launch(corpus: str, out: Path, num_processes: int, steps: int = STEPS, mode: str = "sft") -> tuple[list[dict], str]:
    from speechrl.parallel import local_launch_command

    cmd = local_launch_command(__file__, [mode, corpus, str(out), str(steps)], num_processes)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((out / f"ddp{r}.json").read_text()) for r in range(num_processes)], proc.stderr


def _need_accelerate_cli() -> None:
    if shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the accelerate CLI is not installed beside this python")


def test_two_process_ddp_sft_shards_the_global_batch(unit_features, tiny_corpus, tmp_path):
    """2 ranks × 2 examples of each global batch of 4 ≡ 1 process × 4 (losses and weights)."""
    _need_accelerate_cli()
    single = run_worker(str(tiny_corpus), str(tmp_path / "single"))
    assert single["world_size"] == 1 and len(single["losses"]) == STEPS
    ranks, _ = _launch(str(tiny_corpus), tmp_path / "ddp", 2)
    for r, res in enumerate(ranks):
        assert (res["rank"], res["world_size"], res["backend"]) == (r, 2, "gloo")
        assert res["distributed_type"].endswith("MULTI_CPU")
        assert res["params_sum"] == pytest.approx(single["params_sum"], rel=LOSS_RTOL, abs=1e-3)
        assert res["params_abs_sum"] == pytest.approx(single["params_abs_sum"], rel=LOSS_RTOL)
    # sharded: each rank computed its loss on half of every global batch, together on all of it
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 2 * STEPS
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(single["seen"])
    # rank 0 logs the loss reduced over both ranks: the global batch's loss
    assert ranks[0]["losses"] == pytest.approx(single["losses"], rel=LOSS_RTOL)
    assert ranks[0]["params_abs_sum"] == ranks[1]["params_abs_sum"]  # DDP keeps the replicas identical
    assert single["losses"][-1] < single["losses"][0]  # it trained


def test_two_process_grpo_shards_prompts_and_survives_a_rank_with_nothing_kept(unit_features, tiny_corpus, tmp_path):
    """Each rank rolls out 2 of the 4 prompts; at step 1 rank 1 keeps no sample and still joins the
    update; the replicas stay identical and only the main process writes. (Sampling differs from one
    process, so GRPO is checked for agreement across ranks, not against a 1-process run.)"""
    _need_accelerate_cli()
    ranks, _ = _launch(str(tiny_corpus), tmp_path / "run", 2, steps=2, mode="grpo")
    for res in ranks:
        assert len(res["seen"]) == 2 and all(len(refs) <= 2 for refs in res["seen"])  # 2 of the 4 prompts
    assert ranks[0]["params_abs_sum"] == ranks[1]["params_abs_sum"] > 0
    logged = ranks[0]["metrics"]  # one line per step (rank 0 logs for both): step 1 kept no sample of rank 1
    assert [m["step"] for m in logged] == [1, 2] and logged[0]["kept_samples"] <= 8
    assert (tmp_path / "run" / "grpo" / "result.json").is_file()


def test_two_process_unit_lm_and_dpo_match_one_process(tmp_path):
    """Next-unit pretraining (token-mean loss, rank_weight by units) and DPO (pair mean, equal shares):
    2 ranks × half of each global batch ≡ 1 process × the whole batch."""
    _need_accelerate_cli()
    single = run_unit_worker("", str(tmp_path / "single"))
    ranks, _ = _launch("-", tmp_path / "ddp", 2, steps=4, mode="unit")
    for key in ("lm_losses", "dpo_losses"):
        assert len(single[key]) == 4 and ranks[0][key] == pytest.approx(single[key], rel=LOSS_RTOL)
    for key in ("lm_abs", "dpo_abs"):
        assert ranks[0][key] == ranks[1][key] == pytest.approx(single[key], rel=LOSS_RTOL)
    assert single["lm_losses"][-1] < single["lm_losses"][0] and single["dpo_losses"][-1] < single["dpo_losses"][0]


def test_two_process_tts_sft_matches_one_process_and_diffro_runs(tmp_path):
    """TTS SFT: 2 ranks × 2 texts ≡ 1 process × 4. DiffRO (rollouts sampled per rank, so not comparable
    to one process): both ranks finish every step with identical adapters."""
    _need_accelerate_cli()
    single = run_tts_worker("", str(tmp_path / "single"))
    ranks, _ = _launch("-", tmp_path / "ddp", 2, steps=3, mode="tts")
    assert len(single["sft_losses"]) == 3 and ranks[0]["sft_losses"] == pytest.approx(single["sft_losses"], rel=LOSS_RTOL)
    assert ranks[0]["sft_abs"] == ranks[1]["sft_abs"] == pytest.approx(single["sft_abs"], rel=LOSS_RTOL)
    assert ranks[0]["diffro_steps"] == 3 and ranks[0]["rl_abs"] == ranks[1]["rl_abs"] > 0


def test_corrupt_file_on_one_rank_is_skipped_by_every_rank(unit_features, tiny_corpus, tmp_path):
    """Rank 1's copy of one utterance is corrupt: both ranks finish and drop that utterance."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from speechrl.corpus.build import load_manifest

    _need_accelerate_cli()
    rows = load_manifest(tiny_corpus)
    redo = [r["id"] for r in rows][:4]  # featurised again; rank r takes redo[r::2]
    for rank in (0, 1):
        copy = tmp_path / f"corpus{rank}"
        shutil.copytree(tiny_corpus, copy)
        cache = copy / "features" / "units.safetensors"
        flat = load_file(str(cache))
        save_file({k: v for k, v in flat.items() if k.rsplit("/", 1)[0] not in redo}, str(cache))
        (copy / "features" / "rejected.jsonl").unlink(missing_ok=True)
    bad = redo[1]
    audio = next(Path(r["audio"]) for r in load_manifest(tmp_path / "corpus1") if r["id"] == bad)
    audio.write_bytes(b"RIFF\x00\x00not a wave file at all")  # only rank 1's copy
    ranks, stderr = _launch(str(tmp_path / "corpus{rank}"), tmp_path / "run", 2, steps=2)
    for res in ranks:
        assert res["skipped"] == [bad]  # every rank agrees on what is skipped
        assert res["train_size"] == ranks[0]["train_size"]
    assert ranks[0]["params_abs_sum"] == ranks[1]["params_abs_sum"]
    for rank in (0, 1):  # each rank reports the skip itself
        assert f"rank {rank}: skipped 1 utterance(s)" in stderr and bad in stderr
    rejected = (tmp_path / "corpus0" / "features" / "rejected.jsonl").read_text()
    assert bad in rejected  # the main process records it
    assert not np.isnan(ranks[0]["losses"]).any() and len(ranks[0]["losses"]) == 2


def test_every_rank_drops_the_same_bad_rows_and_the_main_process_records_them(tmp_path, monkeypatch):
    """The data stage on 2 processes over a manifest with every kind of bad row (the table of
    tests/test_data_sources.py): both ranks keep the same rows, in the same order and splits; only the main
    process writes rejected.jsonl, each bad row once."""
    from test_data_sources import _bad_manifest, rejected

    _need_accelerate_cli()
    monkeypatch.setenv("SPEECHRL_CACHE", str(tmp_path / "cache"))
    kinds = _bad_manifest(tmp_path / "data", tmp_path)
    ranks, _ = _launch(str(tmp_path / "data" / "manifest.jsonl"), tmp_path / "run", 2, mode="rows")
    assert [res["world_size"] for res in ranks] == [2, 2]
    assert ranks[0]["kept"] == ranks[1]["kept"] and ranks[0]["report"] == ranks[1]["report"]
    assert [uid for uid, _ in ranks[0]["kept"]] == ["g0", "g1", "g2", "g3", "st", "fl", "abs", "m", "b20"]
    lines = [int(entry["path"].rsplit(":", 1)[1]) for entry in rejected(tmp_path / "run")]
    assert sorted(lines) == [n for n, (ast, _) in sorted(kinds.items()) if ast]  # each bad row once
    assert ranks[0]["report"]["rejected"] == len(lines)


if __name__ == "__main__":
    workers = {"sft": run_worker, "grpo": run_grpo_worker, "unit": run_unit_worker, "tts": run_tts_worker,
               "rows": run_rows_worker}
    workers[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]))
