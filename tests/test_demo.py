"""`speechrl demo`: families at demo scale → one summary (baseline → final per family) and one report."""

import json

import pytest

from conftest import make_tiny_policy
from speechrl.cli import main
from speechrl.pipelines import demo


def test_every_family_has_a_valid_demo_recipe():
    for name, family in demo.FAMILIES.items():
        pipeline, recipe = demo.recipe_for(name)
        assert pipeline == family.pipeline
        if "corpus" not in family.settings:
            assert recipe.corpus.size == demo.DEMO_CORPUS["size"]  # one shared corpus


def test_unknown_family_is_a_config_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--recipe", "nope"]) == 2
    assert "unknown demo recipe" in capsys.readouterr().err


def test_demo_runs_end_to_end_writes_summary_and_report(tmp_path, monkeypatch, capsys, recipe_cache):
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))  # models and corpora shared with the other recipe runs
    lm_dir = tmp_path / "tiny-lm"
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "demo"
    # the demo mechanics on our tiny SpeechLM (the family's Whisper tiny.en runs in test_pipeline_policies)
    tiny = ["corpus.size=30", "corpus.evaluate=false", "model.policy=speechlm", f"model.lm={lm_dir}",
            "model.decoder_layers=null",
            "sft.max_steps=2", "sft.eval_every=2", "sft.batch_size=4", "sft.dev_examples=4", "grpo.max_steps=1",
            "grpo.group_size=2", "grpo.prompts_per_step=2", "grpo.max_new_tokens=4", "grpo.lora.r=2",
            "grpo.dev_examples=4", "test_examples=4"]
    args = ["demo", "--out", str(out), "--recipe", "speech_grpo"] + [a for kv in tiny for a in ("--set", kv)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    head = summary["headline"]["speech_grpo"]
    assert head["metric"] == "wer" and {"sft", "grpo", "improved"} <= set(head)
    assert head["sft"] == summary["metrics"]["speech_grpo"]["sft"]["wer"]
    ci = head["interval"]  # the paired bootstrap interval of the family's summary, for its headline metric
    assert ci == summary["intervals"]["speech_grpo"]["grpo"]["wer"] and ci["low"] <= ci["diff"] <= ci["high"]
    assert json.loads((out / "speech_grpo" / "summary.json").read_text())["intervals"]["grpo"]["wer"] == ci
    assert (out / "speech_grpo" / "summary.json").is_file()
    assert (out / "report.html").is_file()
    assert "speech_grpo" in capsys.readouterr().err  # the plain-text summary
    rows_before = len((out / "speech_grpo" / "metrics.jsonl").read_text().splitlines())
    assert main(args) == 0  # cached: the rerun trains nothing
    rerun = (out / "speech_grpo" / "metrics.jsonl").read_text().splitlines()[rows_before:]
    assert not any("loss" in json.loads(line) for line in rerun)
    # families side by side (`--jobs`): each in a spawned process, its output in <family>/log.txt
    done = demo._side_by_side(["speech_grpo"], tiny, out, False, 1, 1)
    assert done["speech_grpo"][0]["metrics"] == summary["metrics"]["speech_grpo"]
    assert (out / "speech_grpo" / "log.txt").is_file()


@pytest.mark.parametrize("m, before, after, improved", [("wer", 0.5, 0.4, True), ("bleu", 0.5, 0.4, False)])
def test_headline_direction(m, before, after, improved):
    family = demo.Family("p", {}, "a", "b", m)  # the metric's direction: speechrl.eval.metrics.lower_is_better
    assert demo.headline(family, {"a": {m: before}, "b": {m: after}})["improved"] is improved


def test_a_speech_demo_on_another_task_is_judged_on_that_tasks_metric():
    _, recipe = demo.recipe_for("speech_grpo", ["task=sqa", "corpus.text=stories"])
    family = demo.family_for("speech_grpo", recipe)
    assert family.metric == "bleu" and not family.lower_is_better
    head = demo.headline(family, {"sft": {"bleu": 18.4}, "grpo": {"bleu": 19.0}})
    assert head == {"metric": "bleu", "sft": 18.4, "grpo": 19.0, "improved": True}
    summary = {"headline": {"speech_grpo": head}, "wall_s": {"speech_grpo": 1.0, "total": 1.0}}
    assert "bleu ↑  sft 18.4000 → grpo 19.0000  (improved" in demo.describe(summary)
    _, asr = demo.recipe_for("speech_grpo")
    assert demo.family_for("speech_grpo", asr) == demo.FAMILIES["speech_grpo"]


def test_headline_states_the_interval_and_a_change_within_noise():
    family = demo.FAMILIES["speech_grpo"]
    metrics = {"sft": {"wer": 0.62}, "grpo": {"wer": 0.60}}
    noise = {"grpo": {"wer": {"diff": -0.02, "low": -0.05, "high": 0.01, "significant": False}}}
    head = demo.headline(family, metrics, noise)
    assert head["interval"] == noise["grpo"]["wer"] and head["improved"]
    summary = {"headline": {"speech_grpo": head}, "wall_s": {"speech_grpo": 3.0, "total": 3.0}}
    assert ("wer ↓  sft 0.6200 → grpo 0.6000  Δ -0.0200, 95% CI [-0.0500, +0.0100]  (no significant change; 3 s)"
            in demo.describe(summary))
    gain = {"grpo": {"wer": {"diff": -0.02, "low": -0.03, "high": -0.01, "significant": True}}}
    summary["headline"]["speech_grpo"] = demo.headline(family, metrics, gain)
    assert "95% CI [-0.0300, -0.0100]  (improved; 3 s)" in demo.describe(summary)


def test_headline_falls_back_to_the_systems_the_run_has():
    """`--set systems=[grpo]` leaves the family's aligned system out: the last one run stands in, named."""
    family = demo.Family("p", {}, "sft", "combined_filtered", "wer")
    head = demo.headline(family, {"sft": {"wer": 0.62}, "grpo": {"wer": 0.60}})
    assert head == {"metric": "wer", "sft": 0.62, "grpo": 0.60, "improved": True}
