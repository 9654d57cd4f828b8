"""`speechrl run` end to end on a real tiny corpus with a tiny random LM saved as a local folder."""

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_policy, make_tiny_whisper
from speechrl.cli import main


def test_run_recipe_end_to_end_and_rerun_resumes(tmp_path, monkeypatch, recipe_cache):
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))  # models and corpora shared with the other recipe runs
    lm_dir = tmp_path / "tiny-lm"
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "run"
    args = ["run", "recipes/ast_mpgrpo.yaml", "--out", str(out), "--set", "corpus.size=30",
            "--set", "corpus.evaluate=false", "--set", f"model.lm={lm_dir}", "--set", "model.decoder_layers=null",
            "--set", "model.front_end=units",  # the recipe's Whisper front end runs in the spoken-QA test below
            "--set", "sft.max_steps=4", "--set", "sft.eval_every=2", "--set", "sft.batch_size=4",
            "--set", "grpo.max_steps=2", "--set", "grpo.group_size=3", "--set", "grpo.prompts_per_step=2",
            "--set", "grpo.max_new_tokens=6", "--set", "grpo.lora.r=2", "--set", "test_examples=6",
            "--set", "sft.dev_examples=4", "--set", "grpo.dev_examples=4"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_size"] == 6 and summary["wall_s"] > 0
    assert set(summary["metrics"]) == {"sft", "sft_extra", "mpgrpo"}
    for metrics in summary["metrics"].values():
        assert {"bleu", "bleu_sacre", "rouge_l", "meteor", "semantic_similarity"} <= set(metrics)
    # each system's BLEU difference to SFT with its paired bootstrap interval over the 6 test items
    assert summary["baseline"] == "sft" and set(summary["intervals"]) == {"sft_extra", "mpgrpo"}
    for name, per_metric in summary["intervals"].items():
        ci = per_metric["bleu"]
        assert ci["low"] <= ci["diff"] <= ci["high"] and ci["significant"] == (ci["low"] > 0 or ci["high"] < 0)
        assert ci["diff"] == pytest.approx(summary["metrics"][name]["bleu"] - summary["metrics"]["sft"]["bleu"],
                                           abs=0.011)  # the reported BLEU is rounded to 2 decimals
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    assert len((out / "samples" / "mpgrpo.jsonl").read_text().splitlines()) == 6
    # every stage is cached: a rerun finishes without training again
    steps_before = len((out / "metrics.jsonl").read_text().splitlines())
    assert main(args) == 0
    rerun = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()[steps_before:]]
    assert not any("loss" in row for row in rerun)
    rerun_summary = json.loads((out / "summary.json").read_text())
    assert rerun_summary["intervals"] == summary["intervals"]  # seeded
    stages = {"corpus", "features", "rl_data", "sft", "mpgrpo", "sft_extra", "test sft", "test mpgrpo", "test sft_extra"}
    assert stages <= set(summary["fingerprints"]) and rerun_summary["fingerprints"] == summary["fingerprints"]


def test_spoken_qa_recipe_with_sentence_answers_on_the_whisper_front_end(tmp_path, monkeypatch, recipe_cache):
    """recipes/sqa_grpo.yaml as committed — our SpeechLM with a frozen Whisper encoder front end, answers
    in a sentence scored against every accepted wording — at tiny scale: a random 16-dim Whisper encoder
    and a tiny random LM stand in for tiny.en and SmolLM2."""
    from speechrl.eval.speech_tasks import task_item_stats, task_metrics

    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    lm_dir = tmp_path / "tiny-lm"
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    encoder = make_tiny_whisper(tmp_path / "tiny-whisper")
    out = tmp_path / "run"
    args = ["run", "recipes/sqa_grpo.yaml", "--out", str(out), "--set", "corpus.size=30",
            "--set", "corpus.evaluate=false", "--set", f"model.lm={lm_dir}", "--set", f"model.encoder={encoder}",
            "--set", "model.decoder_layers=null", "--set", "sft.max_steps=4", "--set", "sft.eval_every=2",
            "--set", "sft.batch_size=4", "--set", "grpo.max_steps=2", "--set", "grpo.group_size=3",
            "--set", "grpo.prompts_per_step=2", "--set", "grpo.max_new_tokens=6", "--set", "grpo.lora.r=2",
            "--set", "test_examples=6", "--set", "sft.dev_examples=4", "--set", "grpo.dev_examples=4",
            "--set", "sft_extra=false"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"sft", "grpo"} and summary["test_size"] == 6
    corpus = Path(summary["data"]["path"])
    assert list(corpus.glob("features/whisper-*encoder*.safetensors"))  # the frozen encoder's outputs, cached
    question = json.loads((corpus / "manifest.jsonl").read_text().splitlines()[0])["questions"][0]
    assert len(question["answers"]) >= 2 and question["answer"] in question["answers"][0]
    samples = [json.loads(line) for line in (out / "samples" / "grpo.jsonl").read_text().splitlines()]
    assert all(len(s["references"]) >= 2 and s["reference"] in s["references"] for s in samples)
    # the reported test BLEU and its per-item statistics are against every accepted wording
    hyps, refs = [s["hypothesis"] for s in samples], [s["references"] for s in samples]
    assert summary["metrics"]["grpo"]["bleu"] == task_metrics("sqa", hyps, refs, semantic=False)["bleu"]
    items = json.loads((out / "items_test.json").read_text())
    assert items["grpo"]["bleu"] == task_item_stats("sqa", hyps, refs)["bleu"]


def test_continued_sft_resumes_at_the_rate_the_schedule_had_reached():
    from speechrl.pipelines.speech_grpo import continued_sft
    from speechrl.trainers.sft import SFTConfig

    cfg = SFTConfig(lr=3e-4, new_lr=1e-3, max_steps=400, warmup_steps=30, patience=3)
    extra = continued_sft(cfg, best_step=350)
    # SFT's linear decay after warm-up had reached (400 − 350) / (400 − 30) = 50 / 370 of the peak
    assert extra.lr == pytest.approx(3e-4 * 50 / 370) and extra.new_lr == pytest.approx(1e-3 * 50 / 370)
    assert extra.warmup_steps == 0 and extra.patience == 0 and extra.schedule == "constant"
    assert extra.max_steps >= 100 * cfg.max_steps  # RL's time ends it, not SFT's step count
    from speechrl.trainers.common import make_optimizer

    optimizer, scheduler = make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": extra.lr}],
                                          extra.max_steps, extra.warmup_steps, schedule=extra.schedule)
    for _ in range(50):
        optimizer.step(), scheduler.step()
    assert scheduler.get_last_lr() == [extra.lr]  # held at the rate reached
    assert continued_sft(cfg, best_step=15).lr == pytest.approx(1.5e-4)  # mid warm-up: half the peak
    assert continued_sft(cfg, best_step=400).lr == pytest.approx(3e-5)  # the schedule's end: floor
