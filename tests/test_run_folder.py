"""A run folder is reused only for the settings that produced it (issue 25, item 1), --dry-run shows
what a run would do, and --threads chooses torch's thread count (item 7).

The folders here are finished runs written the way :func:`speechrl.pipelines.run_recipe` writes them
(``config.yaml``, ``run.json``, a summary, stage results), without training: a real run takes minutes.
Where a test needs the pipeline to run over such a folder, ``cached_pipeline`` stands in for it: it does
what the real pipeline does on a folder whose every stage is cached (returns the summary the folder has).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from speechrl import config as C
from speechrl import runfolder
from speechrl.cli import main
from speechrl import parallel
from speechrl.parallel import default_threads, set_threads
from speechrl.pipelines import read_recipe, run_recipe
from speechrl.pipelines.demo import recipe_for

ASR_SUMMARY = {"task": "asr", "metrics": {"sft": {"wer": 0.61}, "grpo": {"wer": 0.58}}}


def finished_asr_run(out, overrides=()):
    """A finished ASR GRPO run folder: config.yaml, run.json, the SFT and GRPO stages, test metrics."""
    pipeline, recipe = read_recipe("recipes/asr_grpo_speechlm.yaml", list(overrides))
    out.mkdir(parents=True)
    runfolder.write_record(out, pipeline, recipe, [])
    for stage in ("sft", "grpo"):
        (out / stage).mkdir()
        (out / stage / "result.json").write_text("{}")
    (out / "metrics_test.json").write_text(json.dumps(ASR_SUMMARY["metrics"]))
    (out / "summary.json").write_text(json.dumps(ASR_SUMMARY))
    return recipe


@pytest.fixture
def cached_pipeline(monkeypatch):
    from speechrl.pipelines import speech_grpo

    monkeypatch.setattr(speech_grpo, "run", lambda recipe, out: json.loads((out / "summary.json").read_text()))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_issue_scenario_another_recipe_into_a_finished_folder_stops(tmp_path, capsys):
    """Before: `speechrl run recipes/sqa_grpo.yaml --out <a finished ASR run>` exited 0 in 3 s with
    "task": "sqa" beside the old ASR WERs, and config.yaml rewritten to say task: sqa."""
    out = tmp_path / "asr"
    finished_asr_run(out)
    config_before, summary_before = (out / "config.yaml").read_text(), (out / "summary.json").read_text()
    assert main(["run", "recipes/sqa_grpo.yaml", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"speechrl: config error: {out} holds results of other settings (task: 'asr' → 'sqa', ")
    assert "grpo.rewards: {'accuracy_wer': 1.0, 'hallucination': 1.0, 'keyword_score': 0.5} → {'bleu': 1.0}" in err
    assert "grpo.beta: 0.1 → 0.02" in err
    assert "run into a fresh --out, or pass --resume-anyway" in err and len(err.splitlines()) == 1
    assert (out / "config.yaml").read_text() == config_before  # never describes results it did not produce
    assert (out / "summary.json").read_text() == summary_before


def test_a_changed_reward_alone_stops_too(tmp_path):
    out = tmp_path / "asr"
    finished_asr_run(out)
    _, changed = read_recipe("recipes/asr_grpo_speechlm.yaml", ["grpo.rewards={accuracy_wer: 1.0}"])
    with pytest.raises(C.ConfigError, match=r"holds results of other settings \(grpo\.rewards: .* → "
                                            r"\{'accuracy_wer': 1\.0\}\)"):
        run_recipe("speech_grpo", changed, out)
    assert yaml.safe_load((out / "config.yaml").read_text())["grpo"]["rewards"]["keyword_score"] == 0.5


def test_the_same_settings_and_result_neutral_keys_are_reused(tmp_path):
    out = tmp_path / "asr"
    _, recipe = read_recipe("recipes/asr_grpo_speechlm.yaml")
    finished_asr_run(out)
    assert runfolder.check_reuse(out, "speech_grpo", recipe) == []
    # how often checkpoints are written, and whether the sft_extra control runs, change no result held
    _, neutral = read_recipe("recipes/asr_grpo_speechlm.yaml", ["sft.checkpoint_every=7", "sft_extra=false",
                                                       "corpus.workers=1"])
    assert runfolder.check_reuse(out, "speech_grpo", neutral) == []


def test_config_yaml_names_the_pipeline_and_reruns(tmp_path):
    out = tmp_path / "asr"
    recipe = finished_asr_run(out)
    assert (out / "config.yaml").read_text().startswith("pipeline: speech_grpo\n")
    assert read_recipe(out / "config.yaml") == ("speech_grpo", recipe)


def test_another_pipeline_into_an_old_folder_without_a_pipeline_key(tmp_path):
    out = tmp_path / "run"
    recipe = finished_asr_run(out)
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["pipeline"]  # config.yaml as written before this record existed
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    assert runfolder.check_reuse(out, "speech_grpo", recipe) == []
    with pytest.raises(C.ConfigError, match=r"\(corpus\.evaluate: True → False, model\.tokens: \(absent\) → 'words', .*\(and \d+ more\)\)"):
        runfolder.check_reuse(out, "align_slm", read_recipe("recipes/align_slm.yaml")[1])
    finished = tmp_path / "new"
    finished_asr_run(finished)  # with the pipeline recorded, the first difference named is the pipeline
    with pytest.raises(C.ConfigError, match=r"\(pipeline: 'speech_grpo' → 'align_slm', "):
        runfolder.check_reuse(finished, "align_slm", read_recipe("recipes/align_slm.yaml")[1])


def test_a_key_added_to_the_code_since_counts_as_unchanged_at_its_default(tmp_path):
    out = tmp_path / "asr"
    recipe = finished_asr_run(out)
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["grpo"]["offload_idle"], old["grpo"]["vllm"]
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert runfolder.check_reuse(out, "speech_grpo", recipe) == []
    _, other = read_recipe("recipes/asr_grpo_speechlm.yaml", ["grpo.vllm.max_model_len=512"])
    with pytest.raises(C.ConfigError, match=r"grpo\.vllm\.max_model_len: \(absent\) → 512"):
        runfolder.check_reuse(out, "speech_grpo", other)


def test_another_code_version_warns_but_resumes(tmp_path, capsys):
    out = tmp_path / "asr"
    recipe = finished_asr_run(out)
    record = json.loads((out / "run.json").read_text())
    assert record["code"]["speechrl"] and record["pipeline"] == "speech_grpo"
    record["code"] = {"speechrl": "0.0.9", "commit": "0123abc"}
    (out / "run.json").write_text(json.dumps(record))
    assert runfolder.check_reuse(out, "speech_grpo", recipe) == []
    assert "warning: " in capsys.readouterr().err
    runfolder.write_record(out, "speech_grpo", recipe, [])
    assert {"speechrl": "0.0.9", "commit": "0123abc"} in json.loads((out / "run.json").read_text())["earlier_code"]


def test_resume_anyway_records_the_changes_in_run_json_and_the_summary(tmp_path, cached_pipeline):
    out = tmp_path / "asr"
    finished_asr_run(out)
    assert main(["run", "recipes/asr_grpo_speechlm.yaml", "--out", str(out), "--set", "grpo.beta=0.3",
                 "--resume-anyway"]) == 0
    changes = json.loads((out / "run.json").read_text())["resumed_with_changes"]
    assert [(c["key"], c["old"], c["new"]) for c in changes] == [("grpo.beta", 0.1, 0.3)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_with_changes"] == changes and summary["metrics"] == ASR_SUMMARY["metrics"]
    assert yaml.safe_load((out / "config.yaml").read_text())["grpo"]["beta"] == 0.3
    # a later rerun with those settings resumes, and the folder still says it holds mixed settings
    assert main(["run", "recipes/asr_grpo_speechlm.yaml", "--out", str(out), "--set", "grpo.beta=0.3"]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_with_changes"] == changes


def test_changed_input_files_stop_a_rerun(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "audio": "a.wav", "text": "hi"}\n')
    _, recipe = read_recipe("recipes/asr_grpo_speechlm.yaml", [f"data.manifest={manifest}"])
    out = tmp_path / "run"
    out.mkdir()
    runfolder.write_record(out, "speech_grpo", recipe, [])
    assert json.loads((out / "run.json").read_text())["inputs"]["data"].startswith("manifest-")
    assert runfolder.check_reuse(out, "speech_grpo", recipe) == []
    manifest.write_text(manifest.read_text() + '{"id": "b", "audio": "b.wav", "text": "ho"}\n')
    with pytest.raises(C.ConfigError, match=r"inputs\.data: 'manifest-\w+' → 'manifest-\w+'"):
        runfolder.check_reuse(out, "speech_grpo", recipe)


def test_the_demo_checks_every_family_folder_before_any_work_and_still_resumes(tmp_path):
    from speechrl.pipelines import demo

    pipeline, recipe = recipe_for("align_slm")
    (tmp_path / "align_slm").mkdir()
    runfolder.write_record(tmp_path / "align_slm", pipeline, recipe, [])
    assert runfolder.check_reuse(tmp_path / "align_slm", pipeline, recipe_for("align_slm")[1]) == []
    with pytest.raises(C.ConfigError, match=r"align_slm holds results of other settings \(corpus\.seed: 1 → 2\)"):
        demo.run(tmp_path, ["speech_grpo", "align_slm"], ["corpus.seed=2"])
    assert not (tmp_path / "speech_grpo").exists()  # stopped before the first family started


def test_dry_run_prints_the_config_and_which_stages_run_or_are_reused(tmp_path, capsys):
    out = tmp_path / "asr"
    finished_asr_run(out)
    (out / "grpo" / "result.json").unlink()  # GRPO stopped before it finished
    (out / "metrics_test.json").write_text(json.dumps({"sft": {"wer": 0.61}}))
    files = sorted(p for p in out.rglob("*"))
    assert main(["run", "recipes/asr_grpo_speechlm.yaml", "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    config, _, rest = printed.partition(f"# {out}: ")
    assert yaml.safe_load(config)["task"] == "asr" and yaml.safe_load(config)["pipeline"] == "speech_grpo"
    assert rest.startswith("the same settings: finished stages are reused")
    lines = rest.split("# stages\n")[1].splitlines()
    assert [line.split("(")[0].split() for line in lines] == [
        ["reuse", "sft"], ["run", "grpo"], ["run", "sft_extra"], ["reuse", "test", "sft"], ["run", "test", "grpo"],
        ["run", "test", "sft_extra"]]
    assert sorted(p for p in out.rglob("*")) == files  # nothing written
    assert main(["run", "recipes/sqa_grpo.yaml", "--out", str(out), "--dry-run"]) == 0
    assert "would stop: " in capsys.readouterr().out


def test_threads_are_chosen_before_any_work_and_recorded(tmp_path, cached_pipeline, monkeypatch, capsys):
    out = tmp_path / "asr"
    finished_asr_run(out)
    assert main(["run", "recipes/asr_grpo_speechlm.yaml", "--out", str(out), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1 and json.loads((out / "run.json").read_text())["threads"] == 1
    assert main(["run", "recipes/asr_grpo_speechlm.yaml", "--out", str(out), "--threads", "0"]) == 2
    assert "--threads: 0 is out of range" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= min(4, os.cpu_count())
    busy = parallel.busy_cores(0.2)  # the machine's counters, really read
    assert busy is not None and 0 <= busy <= os.cpu_count()
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    for now_busy, threads in ((0.05, 2), (0.7, 1), (1.0, 1), (3.5, 1), (None, None)):
        monkeypatch.setattr(parallel, "busy_cores", lambda: now_busy)
        monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))  # read only without /proc/stat
        assert default_threads() == (threads or 2)
    assert set_threads(2) == 2 and torch.get_num_threads() == 2


def test_scripts_read_a_run_folders_config_with_or_without_its_pipeline_key(tmp_path):
    out = tmp_path / "asr"
    recipe = finished_asr_run(out)
    from speechrl.pipelines.speech_grpo import SpeechGRPORecipe

    assert runfolder.read_config(out, SpeechGRPORecipe) == recipe
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["pipeline"]
    (out / "config.yaml").write_text(yaml.safe_dump(old))
    assert runfolder.read_config(out, SpeechGRPORecipe, ["grpo.beta=0.5"]).grpo.beta == 0.5
