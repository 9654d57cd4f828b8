"""CUDA paths: the trainers on a GPU and the time-shared schedule's offloading.

These need a CUDA GPU, so CI (CPU only) skips them; they are run on a GPU machine with
``SPEECHRL_TEST_TOKENIZER=<folder with the SmolLM2 tokenizer> pytest tests/test_gpu.py`` (README).
The schedule's CPU behaviour (nothing moves, nothing recorded) is tested here on any machine.
"""

import numpy as np
import pytest
import torch

from conftest import make_tiny_policy
from speechrl.data.tasks import INSTRUCTIONS, Example
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.schedule import TimeShared, audio_encoder
from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
from speechrl.trainers.lora import LoRAConfig
from speechrl.trainers.sft import SFTConfig, train_sft

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine)")


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def synthetic_asr(n: int = 12, seed: int = 0):
    """ASR examples over random phoneme-unit features (what the unit front end consumes)."""
    rng = np.random.default_rng(seed)
    words = ["red", "fox", "ran", "home", "the", "boat", "lake", "sings"]
    feats, examples = {}, []
    for i in range(n):
        k = int(rng.integers(3, 6))
        feats[f"u{i}"] = {"ids": rng.integers(0, 190, 4 * k), "durations": rng.integers(1, 5, 4 * k)}
        examples.append(Example(id=f"u{i}/asr", utterance_id=f"u{i}", task="asr", instruction=INSTRUCTIONS["asr"],
                                reference=" ".join(rng.choice(words, k))))
    return examples[2:], examples[:2], feats


def grpo_cfg(**kw):
    return SpeechGRPOConfig(**{"rewards": {"bleu": 1.0}, "group_size": 4, "prompts_per_step": 2, "max_steps": 3,
                         "max_new_tokens": 8, "eval_every": 0, "dev_examples": 2, "checkpoint_every": 100,
                         "dynamic_sampling": False, "beta": 0.1, "lora": LoRAConfig(r=0), **kw})


def test_schedule_on_cpu_moves_and_records_nothing():
    policy = make_tiny_policy()
    opt = torch.optim.AdamW(policy.parameters())
    sched = TimeShared("cpu", {"encoder": audio_encoder(policy), "optimizer": opt}, offload=True)
    assert not sched.offload and audio_encoder(policy) is policy.front_end
    with sched.stage("rollout"):
        pass
    assert sched.metrics() == {} and all(p.device.type == "cpu" for p in policy.parameters())
    with pytest.raises(ValueError, match="unknown stage 'decode'"):
        with sched.stage("decode"):
            pass


@cuda
def test_stages_hold_only_their_parts_on_the_gpu():
    policy = make_tiny_policy().cuda()
    ref = make_tiny_policy(seed=1).cuda()
    opt = torch.optim.AdamW(policy.lm.parameters())
    policy.lm(input_ids=torch.tensor([[1, 2, 3]], device="cuda")).logits.sum().backward()
    opt.step()
    sched = TimeShared("cuda", {"encoder": policy.front_end, "reference": ref, "optimizer": opt}, offload=True)

    def where():
        return {"encoder": next(policy.front_end.parameters()).device.type,
                "reference": next(ref.parameters()).device.type,
                "optimizer": next(iter(opt.state.values()))["exp_avg"].device.type,
                "lm": next(policy.lm.parameters()).device.type}

    with sched.stage("encode"):
        assert where() == {"encoder": "cuda", "reference": "cpu", "optimizer": "cpu", "lm": "cuda"}
    with sched.stage("reference"):
        assert where() == {"encoder": "cpu", "reference": "cuda", "optimizer": "cpu", "lm": "cuda"}
    with sched.stage("update"):
        assert where() == {"encoder": "cpu", "reference": "cpu", "optimizer": "cuda", "lm": "cuda"}
        opt.step()  # the optimizer still holds the very parameters (moved in place)
    assert set(sched.metrics()) == {"mem/encode_gb", "mem/reference_gb", "mem/update_gb", "mem/peak_gb"}


@cuda
def test_sft_then_grpo_train_on_the_gpu(tmp_path):
    train, dev, feats = synthetic_asr()
    policy = make_tiny_policy()
    sft = SFTConfig(batch_size=4, max_steps=6, eval_every=100, dev_examples=2, max_tokens=8,
                    checkpoint_every=3, lr=3e-3, warmup_steps=0, train_embeddings=True)
    train_sft(policy, train, dev, feats, "asr", sft, tmp_path / "sft", MetricsLogger(tmp_path / "sft", tensorboard=False))
    assert next(policy.parameters()).device.type == "cuda"
    result = train_grpo(policy, train, dev, feats, "asr", grpo_cfg(lora=LoRAConfig(r=8)), tmp_path / "grpo",
                        MetricsLogger(tmp_path / "grpo", tensorboard=False))
    logged = [m for m in read_metrics(tmp_path / "grpo" / "metrics.jsonl") if "loss" in m]
    assert result["steps"] == 3 and len(logged) == 3
    assert all(m["rollout_logp_diff_max"] < 1e-3 for m in logged)  # rollout and trainer agree on the GPU
    assert all(m["mem/peak_gb"] > 0 for m in logged)


@cuda
def test_offloading_changes_memory_not_results(tmp_path):
    """Full fine-tuning (a reference copy, AdamW state for every weight): the same samples, rewards and
    losses at every step with the idle parts offloaded, and a lower peak."""
    train, dev, feats = synthetic_asr()
    curves, peaks = [], []
    for offload in (False, True):
        out = tmp_path / str(offload)
        train_grpo(make_tiny_policy(), train, dev, feats, "asr", grpo_cfg(offload_idle=offload), out,
                   MetricsLogger(out, tensorboard=False))
        logged = [m for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
        assert len(logged) == 3
        curves.append([(m["reward"], m["loss"], m["kl"]) for m in logged])
        peaks.append(max(m["mem/peak_gb"] for m in logged))
    np.testing.assert_allclose(np.array(curves[0]), np.array(curves[1]), rtol=1e-4, atol=1e-6)
    assert peaks[1] < peaks[0]


@cuda
@pytest.mark.skipif(not _has_vllm(), reason="needs vLLM (pip install 'speechrl[vllm]') on a CUDA machine")
def test_real_vllm_rollouts_match_the_trainer(tmp_path):
    """The real engine, colocated: every step's rollout log-probs agree with the trainer's teacher forcing
    (fp32 both sides), so the exported LM, prompt embeddings and weight sync are right."""
    from speechrl.rollout import VLLMConfig

    train, dev, feats = synthetic_asr()
    cfg = grpo_cfg(rewards={"tanh_wer": 1.0}, lr=3e-2, rollout_engine="vllm", lora=LoRAConfig(r=4),
                   vllm=VLLMConfig(dtype="float32", gpu_memory_utilization=0.2, max_model_len=512))
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", cfg, tmp_path, MetricsLogger(tmp_path, tensorboard=False))
    parity = [m["rollout_logp_diff_max"] for m in read_metrics(tmp_path / "metrics.jsonl") if "rollout_logp_diff_max" in m]
    assert len(parity) == 3 and max(parity) < 1e-3
