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
    assert "grpo.beta (float" in out and "corpus.test_voice (str" in out
