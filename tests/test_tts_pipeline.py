"""`speechrl run recipes/tts_rl.yaml` end to end on the real tiny corpus (real Piper rendering and
Whisper transcription) with tiny random LMs saved as a local folder; a rerun resumes from the caches."""

import json

import pytest

from speechrl.cli import main
from test_tts_models import _llama_config


def tiny_run_args(tmp_path, out, **sets):
    """``speechrl run recipes/tts_rl.yaml`` at tiny settings, with a tiny random LM saved as a local folder."""
    from transformers import LlamaForCausalLM

    from speechrl.models.hub import load_tokenizer

    lm_dir = tmp_path / "tiny-lm"
    tok = load_tokenizer("smollm2-135m")
    LlamaForCausalLM(_llama_config(len(tok))).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    sets = {"model.lm": lm_dir, "model.decoder_layers": "null",
            "model.token2text_layers": "null", "sft.max_steps": 3, "sft.eval_every": 3, "sft.batch_size": 4,
            "sft.dev_examples": 4, "token2text.max_steps": 3, "token2text.eval_every": 3, "token2text.batch_size": 4,
            "token2text.dev_examples": 4, "rl.max_steps": 1, "rl.group_size": 2, "rl.prompts_per_step": 1,
            "rl.max_new_tokens": 6, "rl.dev_examples": 1, "diffro_steps": 1, "rl.lora.r": 2, "decode.max_new_tokens": 6,
            "test_examples": 2, "samples": 1, "unseen_texts": "false",
            # the recipe's corpus-scale data: none here (the tiny corpus, or the test's own manifest)
            "extra_speech": 0, "rl_texts": 0, "token2text_samples": 0, **sets}
    args = ["run", "recipes/tts_rl.yaml", "--out", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_tts_recipe_end_to_end_and_rerun_is_cached(tiny_corpus, unit_features, tmp_path):
    out = tmp_path / "run"
    args = tiny_run_args(tmp_path, out, corpus_dir=tiny_corpus, token2text_samples=3, ranking_texts=2,
                         **{"rl.reward_window_s": 10})
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    systems = {"sft", "grpo", "diffro", "combined", "combined_filtered"}
    assert summary["test_size"] == 2 and summary["wall_s"] > 0 and set(summary["metrics"]) == systems
    for metrics in summary["metrics"].values():
        assert {"wer", "cer", "duration_ratio", "step_s"} <= set(metrics)
    assert {"wer", "duration_ratio"} <= set(summary["ground_truth"])
    # Token2Text also learned the SFT model's own samples (those Whisper heard something in), and its
    # ranking of the SFT model's samples on dev is reported
    heard = json.loads((out / "token2text_samples.json").read_text())
    assert len(heard) == 3 and summary["token2text"]["policy_samples"] == sum(bool(r["heard"].strip()) for r in heard)
    assert {"dev_wer", "test_wer", "within_group_spearman", "pooled_spearman"} <= set(summary["token2text"])
    # stage fingerprints (tests/test_determinism.py compares them across runs)
    assert {"units", "rl_prompts", "token2text", *systems, *(f"test {s}" for s in systems)} <= set(summary["fingerprints"])
    # each RL system's corpus WER/CER difference to SFT with its paired bootstrap interval over the test texts
    assert summary["baseline"] == "sft" and set(summary["intervals"]) == systems - {"sft"}
    for name, per_metric in summary["intervals"].items():
        assert set(per_metric) == {"wer", "cer"}
        for metric, ci in per_metric.items():
            assert ci["low"] <= ci["diff"] <= ci["high"]
            assert abs(ci["diff"] - (summary["metrics"][name][metric] - summary["metrics"]["sft"][metric])) < 2e-4
    # the judge set: the dev texts after the RL selection ones, scored for every system with intervals
    assert summary["judge"]["texts"] >= 1 and set(summary["judge"]["metrics"]) == systems
    assert set(summary["judge"]["intervals"]) == systems - {"sft"}
    for name in systems | {"ground_truth"}:
        rows = [json.loads(line) for line in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and set(rows[0]["systems"]) == {name}
        assert (out / "samples" / rows[0]["systems"][name]["audio"]).is_file()
    steps_before = len((out / "metrics.jsonl").read_text().splitlines())
    assert main(args) == 0  # every stage is cached: nothing trains again
    rerun = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()[steps_before:]]
    assert not any("loss" in row for row in rerun)
    # GRPO alone (the demo's setting) has no DiffRO term: no Token2Text is trained for it
    grpo_only = tmp_path / "grpo_only"
    args[args.index(str(out))] = str(grpo_only)
    assert main(args + ["--set", "systems=[grpo]"]) == 0
    summary = json.loads((grpo_only / "summary.json").read_text())
    assert set(summary["metrics"]) == {"sft", "grpo"} and summary["token2text"] is None
    assert not (grpo_only / "token2text").exists()


def test_dev_test_and_rl_texts_are_distinct_and_unseen_in_training(tiny_corpus, unit_features, monkeypatch):
    import speechrl.pipelines.common as common
    import speechrl.pipelines.tts_rl as tts_rl
    from speechrl.corpus.build import load_manifest

    rows = load_manifest(tiny_corpus)
    train_row = next(r for r in rows if r["split"] == "train")
    dev_row = next(r for r in rows if r["split"] == "dev")
    # a training utterance also in dev (the voice speaks a training text), and a dev text twice
    extra = [{**train_row, "split": "dev"}, {**dev_row}]
    monkeypatch.setattr(common, "load_manifest", lambda _: rows + extra)
    data, prompts, _ = tts_rl.splits(tts_rl.TTSRLRecipe(corpus_dir=str(tiny_corpus)))
    seen = {e.text for e in data["train"]}
    for s in ("dev", "test"):
        texts = [e.text for e in data[s]]
        assert len(texts) == len(set(texts)) and not seen & set(texts)
    assert dev_row["text"] in {e.text for e in data["dev"]}
    every, _, _ = tts_rl.splits(tts_rl.TTSRLRecipe(corpus_dir=str(tiny_corpus), unseen_texts=False))
    assert train_row["text"] in {e.text for e in every["dev"]}
    # RL prompts: the training texts, or text-only sentences that no split holds
    assert prompts == [e.text for e in data["train"]]
    _, fresh, _ = tts_rl.splits(tts_rl.TTSRLRecipe(corpus_dir=str(tiny_corpus), rl_texts=40, test_examples=1))
    assert len(set(fresh)) == 40 and not set(fresh) & {r["text"] for r in rows}


def test_extra_speech_joins_train_only_and_is_built_once(tiny_corpus, unit_features, tmp_path, monkeypatch):
    """``extra_speech``: new grammar sentences, really synthesized and unit-extracted, join train and no other
    split; no RL prompt repeats one; a second run reads them from the shared cache without synthesizing."""
    from dataclasses import replace

    import speechrl.pipelines.common as common
    import speechrl.pipelines.tts_rl as tts_rl
    from speechrl.corpus.build import CorpusConfig, load_manifest

    rows = load_manifest(tiny_corpus)
    monkeypatch.setenv("SPEECHRL_CACHE", str(tmp_path))
    monkeypatch.setattr(tts_rl, "dataset_rows", lambda *_: (tiny_corpus, rows, {"source": "corpus"}))
    recipe = tts_rl.TTSRLRecipe(corpus=CorpusConfig(seed=3, voices=["hibari"], test_voice="piper-joe"),
                                extra_speech=3, rl_texts=20)
    plain, _, _ = tts_rl.splits(replace(recipe, extra_speech=0))
    data, prompts, report = tts_rl.splits(recipe)
    added = data["train"][len(plain["train"]):]
    assert report["extra_speech"] == len(added) == 3
    assert [e.id for e in data["train"][:len(plain["train"])]] == [e.id for e in plain["train"]]
    assert all(e.id.startswith("extra") and len(e.units.ids) > 3
               and len(e.units.durations) == len(e.units.ids) for e in added)
    texts = {e.text for e in added}
    assert len(texts) == 3 and not texts & {r["text"] for r in rows} and not texts & set(prompts)
    assert [e.id for s in ("dev", "test") for e in data[s]] == [e.id for s in ("dev", "test") for e in plain[s]]
    monkeypatch.setattr(common, "synthesize_rows", lambda *_: pytest.fail("built twice"))
    again, _, _ = tts_rl.splits(recipe)
    assert [(e.id, e.text, list(e.units.ids)) for e in again["train"]] == [(e.id, e.text, list(e.units.ids))
                                                                            for e in data["train"]]


def test_each_system_trains_the_recipes_rl_config_with_its_method_filter_and_steps():
    from speechrl.pipelines.tts_rl import TTSRLRecipe, system_config

    recipe = TTSRLRecipe(diffro_steps=32)
    recipe.rl.lr, recipe.rl.max_steps = 1e-4, 16
    got = {name: system_config(recipe, name) for name in ("grpo", "diffro", "combined", "combined_filtered")}
    assert {n: (c.method, c.sample_filter, c.max_steps) for n, c in got.items()} == {
        "grpo": ("grpo", True, 16), "diffro": ("diffro", True, 32), "combined": ("combined", False, 16),
        "combined_filtered": ("combined", True, 16)}
    assert all(c.lr == 1e-4 and c.lora == recipe.rl.lora for c in got.values())
    assert recipe.rl.method == "grpo" and recipe.rl.max_steps == 16  # the recipe itself is untouched


def test_tts_recipe_on_a_users_manifest_records_its_bad_rows(tiny_corpus, tmp_path, monkeypatch, recipe_cache):
    """`data.manifest`: clips with their transcripts (real synthesized speech from the corpus fixture) plus
    a missing file and an empty transcript, each skipped into rejected.jsonl and counted; the run trains
    and tests on the manifest's utterances."""
    from conftest import user_manifest

    manifest, rows = user_manifest(tiny_corpus, tmp_path / "mine", {"train": 6, "dev": 2, "test": 2})
    with manifest.open("a") as f:
        f.write(json.dumps({"id": "gone", "audio": "clips/gone.wav", "text": "lost"}) + "\n")
        f.write(json.dumps({"id": "blank", "audio": rows[0]["audio"], "text": "  "}) + "\n")
    out = tmp_path / "run"
    args = tiny_run_args(tmp_path, out, **{"data.manifest": manifest, "systems": "[grpo]"})
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))  # the user data's features go to the shared cache
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    assert data["source"] == "manifest" and data["task"] == "tts" and data["rows"] == 10
    assert data["rejected"] == 2 and data["by_reason"] == {"empty text": 1, "missing audio": 1}
    bad = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(b["reason"].split(":")[0] for b in bad) == ["empty text", "missing audio"]
    assert all("(id gone)" in b["reason"] or "(id blank)" in b["reason"] for b in bad)
    assert (data["train"], data["dev"], data["test"]) == (6, 2, 2) and summary["test_size"] == 2
    tested = {json.loads(x)["id"] for x in (out / "samples" / "ground_truth.jsonl").read_text().splitlines()}
    assert tested <= {r["id"] for r in rows if r["split"] == "test"}  # the manifest's test clips
    assert set(summary["metrics"]) == {"sft", "grpo"}
    assert json.loads((out / "run.json").read_text())["inputs"]["data"].startswith("manifest-")


def test_tts_recipe_data_errors_at_load():
    """corpus_dir and data: one data source; the errors come at load, before any work."""
    from speechrl.config import ConfigError
    from speechrl.pipelines import load_recipe

    with pytest.raises(ConfigError, match="corpus_dir: set it or data.manifest, not both"):
        load_recipe("tts_rl", overrides=["corpus_dir=recipes", "data.manifest=recipes/tts_rl.yaml"])
    with pytest.raises(ConfigError, match="data.hf: set one source"):
        load_recipe("tts_rl", overrides=["data.manifest=recipes/tts_rl.yaml", "data.hf=x/y"])
    with pytest.raises(ConfigError, match="extra_speech: the extra sentences are the synthetic corpus's grammar"):
        load_recipe("tts_rl", overrides=["data.manifest=recipes/tts_rl.yaml", "extra_speech=10"])
