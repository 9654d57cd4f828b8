"""TTS RL trainer on tiny random models: a DiffRO step raises the Token2Text likelihood of the target
text, sample filtering applies DiffRO only to positive-advantage samples, GRPO/combined steps log
each reward and train LoRA only, and a resumed run reproduces the uninterrupted losses."""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speechrl import checkpoint
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.speech.units import Units
from speechrl.eval.tts import DecodeConfig
from speechrl.trainers.lora import LoRAConfig
from speechrl.trainers.tts_rl import TTSRLConfig, diffro_objective, train_tts_rl
from speechrl.trainers.tts_sft import TTSExample
from test_tts_models import UNIT_IDS, tiny_token2text, tiny_tts_lm

TEXTS = ["Anna went home.", "The dog ran to the park.", "It was a sunny day.", "Tom found a red key."]


def examples():
    rng = np.random.default_rng(0)
    return [TTSExample(f"u{i}", t, Units(rng.choice(UNIT_IDS, 8).tolist(), rng.integers(1, 9, 8).tolist()), 1.0)
            for i, t in enumerate(TEXTS)]


class FakeRenderer:
    """Stands in for Piper + Whisper (the real ones run in the recipe test): audio as long as the
    units' frames, a transcript that is right for an even number of units."""

    def __call__(self, units):
        wavs = [np.zeros(320 * max(1, sum(u.durations or [1])), dtype=np.float32) for u in units]
        return wavs, ["anna went home" if len(u) % 2 == 0 else "anna" for u in units]


def teacher_forced(policy, texts, seed=0):
    enc = policy.encode(texts)
    ids = policy.generate(enc, 8, temperature=1.0, generator=torch.Generator().manual_seed(seed))
    return enc, ids, policy.completion_mask(ids)


def trained_token2text():
    """A tiny Token2Text that learned two words: unit 3 spoken → TEXTS[0], unit 40 → TEXTS[1]."""
    from speechrl.trainers.tts_sft import token2text_nll

    t2t = tiny_token2text()
    pairs = [TTSExample("a", TEXTS[0], Units([3] * 6, [2] * 6), 1.0), TTSExample("b", TEXTS[1], Units([40] * 6, [2] * 6), 1.0)]
    optimizer = torch.optim.Adam(t2t.parameters(), lr=1e-2)
    for _ in range(40):
        token2text_nll(t2t, pairs, 16)[0].backward()
        optimizer.step()
        optimizer.zero_grad()
    return t2t.eval().requires_grad_(False)


def test_diffro_steps_raise_token2text_likelihood_of_the_target():
    policy, t2t = tiny_tts_lm(), trained_token2text()
    texts = [TEXTS[0]] * 4
    _, ids, mask = teacher_forced(policy.eval(), texts)
    text_ids, text_mask = t2t.text_targets(texts)
    with torch.no_grad():
        ref_logits = policy.speech_logits(policy.encode(texts), ids, mask)
    cfg = TTSRLConfig(method="diffro", diffro_beta=0.1, diffro_reward="sum")

    def nll():  # Token2Text NLL of the target text under fixed Gumbel noise
        torch.manual_seed(123)
        with torch.no_grad():
            logits = policy.speech_logits(policy.encode(texts), ids, mask)
            return -diffro_objective(logits, ref_logits, ids, mask, t2t, text_ids, text_mask, cfg)[1]["t2t_logprob"]

    before = nll()
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(8):
        loss, stats = diffro_objective(policy.speech_logits(policy.encode(texts), ids, mask), ref_logits, ids, mask,
                                       t2t, text_ids, text_mask, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert nll() < before - 0.04 and stats["full_kl"] > 0  # measured: 2.717 → 2.595, 2.914 → 2.835 (near its floor)


def test_sample_filtering_applies_diffro_only_to_positive_advantages():
    t2t = tiny_token2text().eval().requires_grad_(False)
    v = t2t.vocab.output_size
    torch.manual_seed(0)
    logits = torch.randn(4, 6, v, requires_grad=True)
    ref_logits = torch.randn(4, 6, v)
    ids = torch.randint(0, t2t.vocab.num_unit_tokens, (4, 6))
    mask = torch.ones(4, 6)
    advantages = torch.tensor([1.0, -1.0, 0.5, 0.0])
    text_ids, text_mask = t2t.text_targets([TEXTS[0]] * 4)
    cfg = TTSRLConfig(method="combined")
    diffro_only, stats = diffro_objective(logits, ref_logits, ids, mask, t2t, text_ids, text_mask, cfg, advantages > 0)
    per_row = torch.autograd.grad(diffro_only, logits)[0].abs().sum((1, 2))
    assert stats["diffro_samples"] == 2 and (per_row[[0, 2]] > 0).all() and (per_row[[1, 3]] == 0).all()
    empty, empty_stats = diffro_objective(logits, ref_logits, ids, mask, t2t, text_ids, text_mask, cfg,
                                          torch.zeros(4, dtype=torch.bool))
    assert empty.item() == 0.0 and set(empty_stats) == set(stats)  # the same logged keys on every DDP rank


def rl_cfg(**kw):
    return TTSRLConfig(**{"method": "diffro", "group_size": 2, "prompts_per_step": 2, "max_steps": 4,
                          "max_new_tokens": 6, "dev_examples": 0, "checkpoint_every": 2, "lr": 1e-2,
                          "lora": LoRAConfig(r=4, alpha=8), **kw})


def run_rl(out, cfg, dev=()):
    policy = tiny_tts_lm()
    result = train_tts_rl(policy, tiny_token2text(), TEXTS, list(dev), cfg, out, MetricsLogger(out, False),
                          renderer=FakeRenderer(), decode=DecodeConfig(max_new_tokens=6))
    return policy, result


def losses(out, stage):
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m.get("stage") == stage and "loss" in m]


@pytest.mark.parametrize("method", ["grpo", "combined"])
def test_grpo_and_combined_log_each_reward_and_train_lora_only(tmp_path, method):
    cfg = rl_cfg(method=method, max_steps=2, group_size=3, max_new_tokens=8, dev_examples=2, eval_every=1,
                 rewards={"tanh_wer": 1.0, "tts_duration": 1.0, "tts_diversity": 0.1})
    _, result = run_rl(tmp_path, cfg, examples()[:2])
    saved = load_file(str(checkpoint.latest(tmp_path) / "model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)
    rows = [m for m in read_metrics(tmp_path / "metrics.jsonl") if m.get("stage") == method and "loss" in m]
    assert len(rows) == 2
    assert {"rewards/tanh_wer_mean", "rewards/tts_duration_mean", "rewards/tts_diversity_mean", "kl",
            "render_s", "step_s", "positive_advantage"} <= set(rows[0])
    if method == "combined":
        assert all(r["diffro_samples"] == r["positive_advantage"] for r in rows if "diffro_samples" in r)
    assert set(result["dev"]) == {"0", "1", "2"} and result["steps"] == 2


def test_diffro_resume_reproduces_uninterrupted_losses(tmp_path):
    for name in ("a", "b"):
        run_rl(tmp_path / name, rl_cfg())
    b = tmp_path / "b"
    shutil.rmtree(b / "checkpoints" / "step-0000004")
    (b / "result.json").unlink()
    (b / "metrics.jsonl").write_text("")
    run_rl(b, rl_cfg())
    assert losses(b, "diffro") == pytest.approx(losses(tmp_path / "a", "diffro")[2:], abs=1e-6)
    assert len(losses(b, "diffro")) == 2


def test_inner_iterations_reuse_the_rollouts_with_ratios_against_the_rollout_policy(tmp_path):
    """μ = 2: the second update of a step sees ratios ≠ 1 (the policy moved since the rollout), which
    ε clips; μ = 1 keeps every ratio at exactly 1. Same rollouts and rewards: one render per step."""
    def run(mu):
        cfg = rl_cfg(method="grpo", max_steps=1, group_size=4, max_new_tokens=8, num_iterations=mu, epsilon=0.1,
                     rewards={"tts_duration": 1.0})
        policy, _ = run_rl(tmp_path / str(mu), cfg)
        row = [m for m in read_metrics(tmp_path / str(mu) / "metrics.jsonl") if "loss" in m][-1]
        return row, {k: v.clone() for k, v in policy.state_dict().items() if "lora_B" in k}

    (one, w1), (two, w2) = run(1), run(2)
    assert one["ratio"] == 1.0 and one["clip_frac_low"] == one["clip_frac_high"] == 0.0
    assert two["ratio"] != 1.0
    assert one["rollout_wer"] == two["rollout_wer"]  # the same samples, rendered once
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def constant(prompts, completions, **_):
    return [0.5] * len(completions)


def nan_for_anna(prompts, completions, reference, **_):
    return [float("nan") if r == TEXTS[0] else float(len(c)) for c, r in zip(completions, reference)]


constant.name, constant.value_range = "constant", (0.5, 0.5)
nan_for_anna.name, nan_for_anna.value_range = "nan_for_anna", (0.0, float("inf"))


def test_grpo_scores_at_the_rollout_temperature(tmp_path, monkeypatch):
    """The GRPO term's log-probs (ratios, KL) are those of the distribution the rollouts were drawn from."""
    from speechrl.trainers import tts_rl

    temperatures = []
    real = tts_rl.token_logps

    def spy(logits, labels, temperature=1.0):
        temperatures.append(temperature)
        return real(logits, labels, temperature)

    monkeypatch.setattr(tts_rl, "token_logps", spy)
    run_rl(tmp_path, rl_cfg(method="grpo", max_steps=1, temperature=0.7, beta=0.1, dynamic_sampling=False,
                            rewards={"tts_duration": 1.0}))
    assert temperatures and set(temperatures) == {0.7}


def test_missing_rewards_are_masked_and_constant_groups_dropped(tmp_path, monkeypatch):
    from speechrl.rewards.combine import REWARDS

    monkeypatch.setitem(REWARDS, "constant", constant)
    monkeypatch.setitem(REWARDS, "nan_for_anna", nan_for_anna)
    cfg = rl_cfg(method="grpo", max_steps=2, prompts_per_step=2, group_size=3, dynamic_sampling=False,
                 rewards={"nan_for_anna": 1.0})
    _, result = run_rl(tmp_path / "nan", cfg)
    rows = [m for m in read_metrics(tmp_path / "nan" / "metrics.jsonl") if "step_s" in m]
    # two steps of 2 of the 4 texts cover each text once: TEXTS[0]'s group of 3 is unscored
    assert result["invalid_rewards"] == sum(r["invalid_rewards"] for r in rows) == 3
    assert all(r["kept_samples"] == 6 - r["invalid_rewards"] for r in rows)  # NaN rows are not trained on
    _, result = run_rl(tmp_path / "constant", rl_cfg(method="grpo", max_steps=2, rewards={"constant": 1.0}))
    assert result["skipped_steps"] == 2  # every group has zero variance: dynamic sampling drops them


def test_without_dev_texts_the_last_weights_are_the_result_also_on_a_cached_rerun(tmp_path):
    policy, result = run_rl(tmp_path, rl_cfg(max_steps=2))
    trained = {k: v.clone() for k, v in policy.state_dict().items() if "lora_B" in k}
    assert result["best_step"] == 2 and any(v.abs().sum() > 0 for v in trained.values())
    again, cached = run_rl(tmp_path, rl_cfg(max_steps=2))  # result.json exists: nothing trains
    assert cached == result
    assert all(torch.equal(again.state_dict()[k], v) for k, v in trained.items())
