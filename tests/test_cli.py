"""The command line: config errors are clear and exit 2; --help-config documents every key."""

from speechrl.cli import main


def test_typo_in_config_key_is_a_clear_error(tmp_path, capsys):
    assert main(["corpus", "build", "--out", str(tmp_path), "--set", "voices_per_sentense=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'voices_per_sentense' (did you mean 'voices_per_sentence'?)" in err
    assert not (tmp_path / "manifest.jsonl").exists()


def test_wrong_type_is_a_clear_error(tmp_path, capsys):
    assert main(["corpus", "build", "--out", str(tmp_path), "--set", "workers=two"]) == 2
    assert "workers: expected an integer" in capsys.readouterr().err


def test_recipe_without_pipeline(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: asr\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "'pipeline' must be one of" in capsys.readouterr().err


def test_help_config_lists_recipe_keys(capsys):
    assert main(["run", "recipes/asr_grpo.yaml", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "grpo.beta = 0.02 (float" in out and "corpus.test_voice = 'espeak-us-klatt4' (str" in out
    assert "corpus.test_voice = 'espeak-us-klatt4' (str, default 'hibari')" in out  # the class default beside it


# --- every value checked before any work (issue 25, item 2) -----------------------------------------

import pytest  # noqa: E402


@pytest.mark.parametrize("recipe, override, needle", [
    ("asr_grpo", "grpo.rewards={wer: 1.0}", "grpo.rewards: unknown reward(s) ['wer']; choose from"),
    ("asr_grpo", "grpo.rewards={}", "grpo.rewards: name at least one reward"),
    ("asr_grpo", "grpo.group_size=0", "grpo.group_size: 0 is out of range; must be >= 2"),
    ("asr_grpo", "grpo.lora.r=-1", "grpo.lora.r: -1 is out of range; must be >= 0"),
    ("asr_grpo", "sft.max_steps=-5", "sft.max_steps: -5 is out of range; must be >= 0"),
    ("asr_grpo", "grpo.temperature=0", "grpo.temperature: 0.0 is out of range; must be > 0"),
    ("asr_grpo", "model.lm=/nonexistent/folder", "model.lm: '/nonexistent/folder' looks like a local path but does "
                                                  "not exist"),
    ("asr_grpo", "data.manifest=/nonexistent/m.jsonl", "data.manifest: '/nonexistent/m.jsonl' does not exist"),
    ("asr_grpo", "corpus.voices=[piper-jo]", "corpus.voices: unknown voice(s) ['piper-jo']"),
    ("asr_grpo", "corpus.test_voice=piper-joe", "corpus.test_voice: 'piper-joe' must not be one of the training"),
    ("asr_grpo", "corpus.voices_per_sentence=9", "corpus.voices_per_sentence: 9 is more than the 5 voices"),
    ("asr_grpo_speechlm", "rl_from_zero_shot=true", "rl_from_zero_shot: needs a pretrained model.policy"),
    ("asr_grpo", "task=sqa", "corpus.text: 'wordnet' has no questions or translations for task 'sqa'"),
    ("ast_grpo", "data.target_language=de", "data.target_language: the synthetic corpus's translations are Spanish"),
    ("tts_rl", "systems=[grpo, ppo]", "systems: unknown system(s) ['ppo']"),
    ("tts_rl", "rl.rewards={wer: 1.0}", "rl.rewards: unknown reward(s) ['wer']"),
    ("tts_rl", "data.manifest=/nonexistent/m.jsonl", "data.manifest: '/nonexistent/m.jsonl' does not exist"),
    ("align_slm", "curriculum.rounds=3", "curriculum.chosen_min: 3 rounds need 3 values"),
    ("align_slm", "data.manifest=/nonexistent/m.jsonl", "data.manifest: '/nonexistent/m.jsonl' does not exist"),
    ("align_slm", "judge.nll_best=10", "judge.nll_best: 10 must be below nll_worst 9.5"),
])
def test_bad_values_stop_before_any_work(tmp_path, capsys, recipe, override, needle):
    """Before: an unknown reward failed as a traceback when GRPO started (after the corpus and SFT);
    group_size 0, a LoRA rank −1 or max_steps −5 were accepted; a missing model folder read as a hub id."""
    out = tmp_path / "out"
    assert main(["run", f"recipes/{recipe}.yaml", "--out", str(out), "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("speechrl: config error: ") and needle in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing started


def test_shipped_recipes_and_demo_families_pass_the_checks():
    from pathlib import Path

    from speechrl.pipelines import read_recipe
    from speechrl.pipelines.demo import FAMILIES, recipe_for

    assert {read_recipe(p)[0] for p in sorted(Path("recipes").glob("*.yaml"))} == {"speech_grpo", "align_slm", "tts_rl"}
    assert [recipe_for(name)[0] for name in FAMILIES] == [f.pipeline for f in FAMILIES.values()]


def test_help_config_shows_the_recipes_values(capsys):
    assert main(["run", "recipes/asr_grpo.yaml", "--help-config", "--set", "grpo.beta=0.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "grpo.beta = 0.3 (float, >= 0, default 0.02): k3 KL weight to the reference (IBM: 0.02; 0: no reference " \
           "pass)" in out
    assert any(line.startswith("sft.max_steps = 400 (int, >= 0, default 1500)") for line in out)  # the recipe's
    assert any(line.startswith("task = 'asr' (") and "default" not in line.split(":")[0] for line in out)
