"""`speechrl run` with `model.policy` set to pretrained HF speech models (tiny random configs of the real
classes saved as local folders): zero-shot → SFT → GRPO → sft_extra → test, through the same code."""

import json

import pytest
import torch

from speechrl.cli import main
from speechrl.models.hub import load_tokenizer
from speechrl.speech.transcribe import offline_whisper_tokenizer
from test_native import make_granite, make_qwen2_audio, make_whisper


def tiny_folder(kind, path):
    torch.manual_seed(0)
    if kind == "whisper":
        policy = make_whisper(offline_whisper_tokenizer(), instruction="ignore")
    else:
        policy = {"qwen2_audio": make_qwen2_audio, "granite_speech": make_granite}[kind](load_tokenizer("smollm2-135m"))
    return policy.save_pretrained(path)


def run_args(out, policy, recipe="recipes/asr_grpo.yaml"):
    return ["run", recipe, "--out", str(out), "--set", "corpus.size=30", "--set", "corpus.evaluate=false",
            "--set", f"model.policy={policy}", "--set", "sft.max_steps=2", "--set", "sft.eval_every=2",
            "--set", "sft.batch_size=2", "--set", "grpo.max_steps=2", "--set", "grpo.group_size=3",
            "--set", "grpo.prompts_per_step=2", "--set", "grpo.max_new_tokens=5", "--set", "grpo.lora.r=2",
            "--set", "test_examples=4", "--set", "sft.dev_examples=3", "--set", "grpo.dev_examples=3",
            "--set", "sft.max_tokens=8"]


@pytest.mark.parametrize("kind", ["whisper", "qwen2_audio", "granite_speech"])
def test_pretrained_policy_runs_the_asr_recipe_end_to_end(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("SPEECHRL_CACHE", str(tmp_path / "cache"))
    folder = tiny_folder(kind, tmp_path / kind)
    out = tmp_path / "run"
    assert main(run_args(out, folder)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"zero_shot", "sft", "grpo", "sft_extra"}
    assert set(summary["intervals"]) == {"zero_shot", "grpo", "sft_extra"}
    assert all("wer" in m for m in summary["metrics"].values())
    assert len((out / "samples" / "zero_shot.jsonl").read_text().splitlines()) == 4
    # the SFT's best weights are a loadable checkpoint of the same class
    assert (out / "sft" / "best" / "model.safetensors").is_file()
    if kind == "whisper":  # its frozen encoder's outputs were computed once and cached beside the features
        cached = list((tmp_path / "cache").rglob("features/whisper-*-encoder-*.safetensors"))
        assert len(cached) == 1
