"""SFT and GRPO trainers on real corpus features with a tiny policy: learning, checkpoints, resume."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_policy
from speechrl import checkpoint
from speechrl.data.tasks import task_examples
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.trainers.grpo import SpeechGRPOConfig, rollout, train_grpo
from speechrl.trainers.lora import LoRAConfig
from speechrl.trainers.sft import SFTConfig, train_sft


@pytest.fixture(scope="module")
def asr(unit_features):
    rows, feats = unit_features
    train = task_examples([r for r in rows if r["split"] == "train"], "asr")
    dev = task_examples([r for r in rows if r["split"] == "dev"], "asr")
    return train, dev, feats


def losses(out, stage):
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m.get("stage") == stage and "loss" in m]


def run_sft(out, train, dev, feats, **kw):
    cfg = SFTConfig(**{"batch_size": 4, "max_steps": 12, "eval_every": 100, "dev_examples": 4,
                       "max_tokens": 12, "checkpoint_every": 4, "lr": 3e-3, "warmup_steps": 0,
                       "train_embeddings": True, **kw})  # a random tiny LM: its embeddings must learn too
    policy = make_tiny_policy()
    result = train_sft(policy, train, dev, feats, "asr", cfg, out, MetricsLogger(out, tensorboard=False))
    return policy, result


def test_sft_learns_and_checkpoints_hold_everything(asr, tmp_path):
    train, dev, feats = asr
    _, result = run_sft(tmp_path, train, dev, feats, max_steps=24, checkpoint_every=8)
    curve = losses(tmp_path, "sft")
    assert len(curve) == 24 and sum(curve[-4:]) / 4 < sum(curve[:4]) / 4 * 0.8
    ckpts = checkpoint.complete(tmp_path)
    assert [p.name for p in ckpts] == ["step-0000016", "step-0000024"]  # keep=2, older pruned
    assert {f.name for f in ckpts[-1].iterdir()} == {"model.safetensors", "optimizer.safetensors",
                                                     "optimizer.json", "rng.safetensors", "state.json"}
    assert (tmp_path / "best" / "model.safetensors").is_file() and result["steps"] == 24


def test_sft_resume_reproduces_uninterrupted_losses(asr, tmp_path):
    train, dev, feats = asr
    run_sft(tmp_path / "a", train, dev, feats)
    run_sft(tmp_path / "b", train, dev, feats)
    b = tmp_path / "b"
    # roll run b back to its step-8 checkpoint, as if it had died after step 8
    shutil.rmtree(b / "checkpoints" / "step-0000012")
    (b / "result.json").unlink()
    (b / "metrics.jsonl").write_text("")
    run_sft(b, train, dev, feats)
    resumed = losses(b, "sft")
    assert len(resumed) == 4  # steps 9..12 only
    assert resumed == pytest.approx(losses(tmp_path / "a", "sft")[8:], abs=1e-6)


def grpo_cfg(**kw):
    return SpeechGRPOConfig(**{"rewards": {"accuracy_wer": 1.0, "hallucination": 0.5}, "group_size": 4,
                         "prompts_per_step": 2, "max_steps": 4, "max_new_tokens": 8, "eval_every": 0,
                         "dev_examples": 4, "checkpoint_every": 2, "lr": 1e-2, "beta": 0.02,
                         "dynamic_sampling": False, "lora": LoRAConfig(r=4, alpha=8), **kw})


def test_grpo_updates_lora_and_logs_each_reward(asr, tmp_path):
    train, dev, feats = asr
    policy = make_tiny_policy()
    base = {n: p.detach().clone() for n, p in policy.lm.named_parameters()}
    cfg = grpo_cfg(temperature=0.7)  # sampled and scored at T = 0.7
    result = train_grpo(policy, train, dev, feats, "asr", cfg, tmp_path, MetricsLogger(tmp_path, False))
    # the last checkpoint holds exactly the trainable LoRA weights, and they moved (lora_B starts at 0)
    saved = load_file(str(checkpoint.latest(tmp_path) / "model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in policy.lm.named_parameters() if "lora_" not in n}
    assert all(torch.equal(frozen[n], base[n]) for n in base if n in frozen)  # the reference is untouched
    rows = [m for m in read_metrics(tmp_path / "metrics.jsonl") if m.get("stage") == "grpo" and "loss" in m]
    assert len(rows) == 4
    assert {"rewards/accuracy_wer_mean", "rewards/hallucination_mean", "kl", "reward"} <= set(rows[0])
    # the engine's log-probs of what it sampled (at T) equal the trainer's teacher-forced ones (fp32 CPU)
    assert all(r["rollout_logp_diff_max"] < 1e-4 for r in rows)
    assert result["steps"] == 4


def test_mixed_policy_puts_the_reference_in_each_group(asr):
    train, _, feats = asr
    policy = make_tiny_policy()
    cfg = grpo_cfg(mixed_policy=True, max_new_tokens=24)
    ro = rollout(policy, train[:2], feats, cfg)
    ids, mask, off_policy, texts = ro.ids, ro.mask, ro.off_policy, ro.texts
    assert off_policy.tolist() == [False, False, False, True] * 2
    assert texts[3] == train[0].reference and texts[7] == train[1].reference
    # the engine drew the on-policy rows only: their log-probs are known, the reference rows' are not
    assert ro.logps.shape == ids.shape and ro.logps[off_policy].isnan().all()
    on = ~off_policy
    assert torch.isfinite(ro.logps[on][mask[on].bool()]).all()


def is_reference(prompts, completions, reference, **_):
    return [float(c == r) for c, r in zip(completions, reference)]


is_reference.name, is_reference.value_range = "is_reference", (0.0, 1.0)


def test_mixed_policy_logs_the_reward_of_its_own_samples_only(asr, tmp_path, monkeypatch):
    """The ground-truth row scores 1 on this reward, a random policy's samples 0: the logged rollout
    reward is the samples' (0), while the groups still learn from the reference row."""
    from speechrl.rewards.combine import REWARDS

    monkeypatch.setitem(REWARDS, "is_reference", is_reference)
    train, dev, feats = asr
    cfg = grpo_cfg(mixed_policy=True, max_steps=2, max_new_tokens=24, rewards={"is_reference": 1.0}, dev_examples=0)
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", cfg, tmp_path, MetricsLogger(tmp_path, False))
    rows = [m for m in read_metrics(tmp_path / "metrics.jsonl") if m.get("stage") == "grpo" and "loss" in m]
    assert len(rows) == 2
    assert all(r["reward"] == 0.0 and r["rewards/is_reference_mean"] == 0.0 for r in rows)
    assert all(r["kept_samples"] == 8 and r["positive_advantage"] == 2 for r in rows)


def test_rollout_logps_match_teacher_forcing_at_the_rollout_temperature(asr):
    """Sampling at temperature 0.7 (top-p 0.9) returns each token's log-prob under logits / 0.7 — what the
    trainer computes by teacher forcing at the same temperature (≈1e-5); scoring the same samples at
    T = 1, as the trainer did before, is visibly off. A wrong engine name is a clear error."""
    from speechrl.rollout import logp_parity, make_engine

    train, _, feats = asr
    policy = make_tiny_policy()
    ro = rollout(policy, train[:3], feats, grpo_cfg(temperature=0.7, top_p=0.9, max_new_tokens=10))
    with torch.no_grad():
        at_t = policy.completion_logps(ro.enc, ro.ids, ro.mask, temperature=0.7)
        at_one = policy.completion_logps(ro.enc, ro.ids, ro.mask)
    assert logp_parity(ro.logps, at_t, ro.mask)["rollout_logp_diff_max"] < 1e-4
    assert logp_parity(ro.logps, at_one, ro.mask)["rollout_logp_diff_mean"] > 1e-2
    assert logp_parity(ro.logps + 0.5, at_t, ro.mask)["rollout_logp_diff_mean"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="unknown rollout engine"):
        make_engine("sglang")


def test_grpo_resume_reproduces_uninterrupted_losses(asr, tmp_path):
    train, dev, feats = asr
    for name in ("a", "b"):
        train_grpo(make_tiny_policy(), train, dev, feats, "asr", grpo_cfg(), tmp_path / name,
                   MetricsLogger(tmp_path / name, False))
    b = tmp_path / "b"
    shutil.rmtree(b / "checkpoints" / "step-0000004")
    (b / "result.json").unlink()
    (b / "metrics.jsonl").write_text("")
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", grpo_cfg(), b, MetricsLogger(b, False))
    assert losses(b, "grpo") == pytest.approx(losses(tmp_path / "a", "grpo")[2:], abs=1e-6)


def test_full_finetune_grpo_has_a_frozen_reference(asr, tmp_path):
    """Without LoRA the KL term needs its own frozen copy of the policy (else KL ≡ 0)."""
    train, dev, feats = asr
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", grpo_cfg(lora=LoRAConfig(r=0), lr=1e-3), tmp_path,
               MetricsLogger(tmp_path, False))
    kls = [m["kl"] for m in read_metrics(tmp_path / "metrics.jsonl") if "kl" in m]
    assert kls[0] == 0.0 and max(kls[1:]) > 0  # policy == reference only before the first update


def test_rank_share_splits_a_global_batch_in_rank_order():
    """Rank r of W takes items [r·n/W, (r+1)·n/W): together the ranks cover the batch once."""
    from types import SimpleNamespace

    from speechrl.parallel import rank_share

    batch = list("abcdef")
    shares = [rank_share(batch, SimpleNamespace(num_processes=3, process_index=r)) for r in range(3)]
    assert shares == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert rank_share(batch, SimpleNamespace(num_processes=1, process_index=0)) == batch
    with pytest.raises(ValueError, match="divisible by 4"):
        rank_share(batch, SimpleNamespace(num_processes=4, process_index=0))


def test_rank_weight_and_mean_over_ranks_on_one_process():
    """w = world·n/Σn: 1 on one process whatever n (the loss is untouched), 0 when there is nothing."""
    from speechrl.trainers.common import make_accelerator, mean_over_ranks, rank_weight

    acc = make_accelerator(0)
    assert rank_weight(acc, torch.tensor(37)).item() == 1.0 and rank_weight(acc, 0).item() == 0.0
    assert mean_over_ranks(acc, {"loss": 0.25, "kl": 2}) == {"loss": 0.25, "kl": 2.0}
