"""`speechrl run` end to end on a real tiny corpus with a tiny random LM saved as a local folder."""

import json

from conftest import make_tiny_policy
from speechrl.cli import main


def test_run_recipe_end_to_end_and_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHRL_CACHE", str(tmp_path / "cache"))
    lm_dir = tmp_path / "tiny-lm"
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "run"
    args = ["run", "recipes/ast_mpgrpo.yaml", "--out", str(out), "--set", "corpus.size=30",
            "--set", "corpus.evaluate=false", "--set", f"model.lm={lm_dir}", "--set", "model.decoder_layers=null",
            "--set", "sft.max_steps=4", "--set", "sft.eval_every=2", "--set", "sft.batch_size=4",
            "--set", "grpo.max_steps=2", "--set", "grpo.group_size=3", "--set", "grpo.prompts_per_step=2",
            "--set", "grpo.max_new_tokens=6", "--set", "grpo.lora.r=2", "--set", "test_examples=6",
            "--set", "sft.dev_examples=4", "--set", "grpo.dev_examples=4"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_size"] == 6 and summary["wall_s"] > 0
    assert set(summary["metrics"]) == {"sft", "sft_extra", "mpgrpo"}
    for metrics in summary["metrics"].values():
        assert {"bleu", "rouge_l", "meteor", "semantic_similarity"} <= set(metrics)
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    assert len((out / "samples" / "mpgrpo.jsonl").read_text().splitlines()) == 6
    # every stage is cached: a rerun finishes without training again
    steps_before = len((out / "metrics.jsonl").read_text().splitlines())
    assert main(args) == 0
    rerun = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()[steps_before:]]
    assert not any("loss" in row for row in rerun)
