"""`speechrl run recipes/align_slm.yaml` end to end on a real tiny corpus, a tiny random unit LM, the
real vocoder, Whisper and SmolLM2 judge; a rerun resumes from the cached stages."""

import json
import shutil

import pytest
import torch

from speechrl.cli import main
from speechrl.models.unit_lm import UnitLM


def tiny_run_args(tmp_path, out, *sets):
    """``speechrl run recipes/align_slm.yaml`` at tiny settings, with a tiny random unit LM saved as a local
    folder."""
    lm_dir = tmp_path / "tiny-lm"
    torch.manual_seed(1)  # the tiny LM (and so whether round 1 finds pairs) must not depend on earlier tests
    UnitLM.from_scratch(num_units=8, hidden_size=32, layers=1, heads=2).lm.save_pretrained(lm_dir)
    tiny = ["corpus.size=30", "corpus.evaluate=false", f"model.lm={lm_dir}", "model.layers=null",
            "model.tokens=units", "long_form.text=false",  # a word token needs a tokenizer: the words test has one
            "pretrain.max_steps=2", "pretrain.eval_every=2", "pretrain.batch_size=4",
            "curriculum.prompts_per_round=4",  # quantile thresholds, round 1's lowered so that it finds pairs:
            "curriculum.chosen_min=[0.6,0.8]",  # with the recipe's 0.7 whether it does hangs on the installed stack
            "sampling.n=3", "sampling.max_new_units=12", "dpo.epochs=1", "dpo.batch_size=2",
            "benchmarks.pairs=3", "test_prompts=3", "eval_continuations=1", "samples=2",
            "long_form.stories=2", "long_form.dev_stories=1", *sets]
    return ["run", "recipes/align_slm.yaml", "--out", str(out)] + [a for kv in tiny for a in ("--set", kv)]


def test_align_slm_recipe_end_to_end(tmp_path, monkeypatch, recipe_cache):
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))  # models and corpora shared with the other recipe runs
    out = tmp_path / "run"
    args = tiny_run_args(tmp_path, out)
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_size"] == 3
    assert set(summary["metrics"]) == {"base", "round1", "round2", "continued_ntp"}
    assert summary["training"]["round1"].get("steps", 0) > 0, summary["training"]["round1"]  # DPO ran
    for metrics in summary["metrics"].values():
        assert {"judge_score", "auto_bleu", "genppl", "swuggy", "sblimp", "ssc", "tsc", "pairs",
                "tsc_ending_given_story", "tsc_ending_alone"} <= set(metrics)
        assert 1.0 <= metrics["judge_score"] <= 5.0 and 0 <= metrics["tsc"] <= 100
    assert "long_form" in summary["fingerprints"]  # whole stories joined the pretraining
    # each system's difference to the base with its paired bootstrap interval: judge score over the test
    # prompts, accuracies over the minimal pairs
    assert summary["baseline"] == "base" and set(summary["intervals"]) == {"round1", "round2", "continued_ntp"}
    for name, per_metric in summary["intervals"].items():
        assert set(per_metric) == {"judge_score", "swuggy", "sblimp", "ssc", "tsc"}
        for metric, ci in per_metric.items():
            assert ci["low"] <= ci["diff"] <= ci["high"]
            assert abs(ci["diff"] - (summary["metrics"][name][metric] - summary["metrics"]["base"][metric])) < 1e-3
    for k in (1, 2):
        stats = json.loads((out / f"round{k}" / "pair_stats.json").read_text())
        assert stats["prompts"] == 4 and stats["candidates"] == 12  # every prompt sampled and judged
        assert stats["chosen_min"] > stats["rejected_max"]  # the round's quantiles, as judge scores
        trained = summary["training"][f"round{k}"]
        assert "skipped" in trained or trained["steps"] > 0
    rows = [json.loads(x) for x in (out / "samples" / "continuations.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]["systems"]) == {"base", "round1", "round2", "continued_ntp"}
    assert (out / "report.html").is_file()
    # a control that never beats the base on dev (here: lr 0) holds the base's weights: it reports the base's
    # metrics instead of sampling and judging the same model again
    shutil.rmtree(out / "continued_ntp")
    results = json.loads((out / "metrics_test.json").read_text())
    del results["continued_ntp"]
    (out / "metrics_test.json").write_text(json.dumps(results))
    assert main(args + ["--set", "pretrain.lr=0"]) == 2  # other settings than the folder's: refused
    args += ["--set", "pretrain.lr=0"]
    assert main(args + ["--resume-anyway"]) == 0  # reused anyway, and said so
    kept = json.loads((out / "summary.json").read_text())
    assert [(c["key"], c["new"]) for c in kept["resumed_with_changes"]] == [("pretrain.lr", 0.0)]
    assert kept["training"]["continued_ntp"]["kept_base"] and kept["training"]["continued_ntp"]["best_step"] == 0
    assert kept["metrics"]["continued_ntp"] == kept["metrics"]["base"]
    assert all(ci == {"diff": 0.0, "low": 0.0, "high": 0.0, "significant": False}  # the base itself: no change
               for ci in kept["intervals"]["continued_ntp"].values())
    before = len((out / "metrics.jsonl").read_text().splitlines())
    assert main(args) == 0  # every stage cached: nothing trains again
    rerun = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()[before:]]
    assert not any("loss" in r for r in rerun)
    assert main(args + ["--set", "control=false"]) == 0  # no continued-NTP control
    assert set(json.loads((out / "summary.json").read_text())["metrics"]) == {"base", "round1", "round2"}
    assert main(args + ["--set", "control=false", "--set", "eval_all_rounds=false"]) == 0  # the demo's settings
    assert set(json.loads((out / "summary.json").read_text())["metrics"]) == {"base", "round2"}
    test_metrics = (out / "metrics_test.json").read_text()
    assert main(args + ["--set", "control=false", "--set", "eval_all_rounds=false", "--set", "eval_split=dev"]) == 0
    dev_summary = json.loads((out / "summary.json").read_text())
    assert dev_summary["eval_split"] == "dev" and set(dev_summary["metrics"]) == {"base", "round2"}
    assert json.loads((out / "metrics_dev.json").read_text()) == dev_summary["metrics"]
    assert (out / "metrics_test.json").read_text() == test_metrics  # the test results are left alone
    dev_ids = {json.loads(x)["id"] for x in (out / "samples" / "continuations.jsonl").read_text().splitlines()}
    assert dev_ids and not dev_ids & {r["id"] for r in rows}  # dev prompts, not test ones
    # other pair thresholds on a finished round: refused, naming the folder (not silently reused) — and
    # even with --resume-anyway, by the round's own record of its pair settings
    assert main(args + ["--set", "curriculum.chosen_min=[0.5,0.8]"]) == 2
    with pytest.raises(ValueError, match="trained with pair settings"):
        main(args + ["--set", "curriculum.chosen_min=[0.5,0.8]", "--resume-anyway"])


def test_align_slm_recipe_on_a_users_audio_only_manifest(tiny_corpus, tmp_path, monkeypatch, recipe_cache):
    """`data.manifest` with audio only (no transcripts; real synthesized speech from the corpus fixture) plus
    a missing and an unreadable file, each skipped into rejected.jsonl and counted: the unit LM, the round's
    prompts and the evaluation prompts are the manifest's clips, the prompts' words transcribed from them."""
    from conftest import user_manifest

    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    manifest, rows = user_manifest(tiny_corpus, tmp_path / "mine", {"train": 8, "dev": 2, "test": 3}, text=False)
    (tmp_path / "mine" / "clips" / "notes.wav").write_text("not audio")
    with manifest.open("a") as f:
        f.write(json.dumps({"id": "gone", "audio": "clips/gone.wav"}) + "\n")
        f.write(json.dumps({"id": "notes", "audio": "clips/notes.wav", "split": "train"}) + "\n")
    out = tmp_path / "run"
    assert main(tiny_run_args(tmp_path, out, f"data.manifest={manifest}", "curriculum.rounds=1", "control=false")) == 0
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    assert data["source"] == "manifest" and data["task"] == "audio" and data["rows"] == 13
    assert data["splits"] == {"train": 8, "dev": 2, "test": 3}
    assert data["rejected"] == 2 and data["by_reason"] == {"missing audio": 1, "unreadable audio": 1}
    bad = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted(b["reason"].split(":")[0] for b in bad) == ["missing audio", "unreadable audio"]
    assert set(summary["metrics"]) == {"base", "round1"} and summary["test_size"] == 3
    ids = {s: {r["id"] for r in rows if r["split"] == s} for s in ("train", "test")}
    groups = [json.loads(x) for x in (out / "round1" / "candidates.jsonl").read_text().splitlines()]
    assert len(groups) == 4 and {g["prompt_id"] for g in groups} <= ids["train"]  # prompts of the user's clips
    assert any(g["prompt_text"] for g in groups)  # words transcribed from the audio (no text column)
    evaluated = [json.loads(x) for x in (out / "eval_samples" / "base.jsonl").read_text().splitlines()]
    assert evaluated and {e["id"] for e in evaluated} <= ids["test"]
    assert "corpus" not in summary["fingerprints"] and "units" in summary["fingerprints"]


def test_align_slm_recipe_reads_words(tmp_path, monkeypatch, recipe_cache, capsys):
    """`model.tokens: words`: the LM reads the recognized units as the transcripts' lexicon words — pretraining
    sequences, prompts, continuations, DPO pairs and benchmark members alike — each word token starting from
    the text LM's embedding of the word; continuations are spoken by the words' pronunciations. The round's
    prompts are long-form training stories told up to their last sentence (`curriculum.prompts: stories`), its
    pairs the judge's and context-contrast pairs (`curriculum.context_samples`: every training story continued
    twice, each continuation preferred over another story's on its story).
    A tiny random Llama with the real SmolLM2 tokenizer (a word embedding needs one)."""
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechrl.models.hub import load_tokenizer

    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    lm_dir = tmp_path / "tiny-text-lm"
    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
                     ).save_pretrained(lm_dir)
    tok.save_pretrained(lm_dir)
    out = tmp_path / "run"
    args = tiny_run_args(tmp_path, out, f"model.lm={lm_dir}", "model.tokens=words", "long_form.text=true",
                         "curriculum.rounds=1", "curriculum.prompts=stories", "curriculum.context_samples=2",
                         "control=false")
    assert main(tiny_run_args(tmp_path, tmp_path / "no-stories", f"model.lm={lm_dir}", "curriculum.prompts=stories",
                              "long_form.stories=0")) == 2  # nothing to prompt with: a config error, said first
    assert "needs long-form stories" in capsys.readouterr().err
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"base", "round1"} and "lexicon" in summary["fingerprints"]
    with safe_open(out / "unit_lm" / "best" / "model.safetensors", "pt") as f:
        rows = next(f.get_slice(k).get_shape()[0] for k in f.keys() if "embed_tokens" in k)
    lexicon_size = rows - len(tok) - 1  # text rows, one row a word, the speech BOS
    assert 20 < lexicon_size < 400 and lexicon_size != 190  # the corpus's words, not the phoneme units
    groups = [json.loads(x) for x in (out / "round1" / "candidates.jsonl").read_text().splitlines()]
    assert [g["prompt_id"][0] for g in groups] == ["l", "l"]  # the 2 training stories, told up to their last sentence
    assert all(g["prompt_text"].count(".") >= 2 for g in groups)
    for g in groups:  # prompts and continuations are word tokens; the transcripts are of their spoken words
        assert all(0 <= t < lexicon_size for t in g["prompt_units"])
        assert all(0 <= t < lexicon_size for c in g["candidates"] for t in c["units"])
    assert any(c["transcript"].strip() for g in groups for c in g["candidates"])
    stats = json.loads((out / "round1" / "pair_stats.json").read_text())  # judge pairs, and the context pairs
    pairs = [json.loads(x) for x in (out / "round1" / "pairs.jsonl").read_text().splitlines()]
    context = {g["prompt_id"]: [c["units"] for c in g["candidates"]]
               for g in map(json.loads, (out / "round1" / "context.jsonl").read_text().splitlines())}
    assert len(context) == 2 and all(len(c) == 2 for c in context.values())  # 2 stories × 2 continuations
    assert [p["feedback"] for p in pairs].count("judge") == stats["pairs"]
    contrast = [p for p in pairs if p["feedback"] == "context"]
    assert len(contrast) == stats["context_pairs"] == 4
    for p in contrast:  # its own story's continuation over the other story's, on its story
        other = next(k for k in context if k != p["prompt_id"])
        assert p["chosen_units"] in context[p["prompt_id"]] and p["rejected_units"] in context[other]
    for metrics in summary["metrics"].values():
        assert 0 <= metrics["tsc_ending_given_story"] <= 100 and 0 <= metrics["swuggy"] <= 100


def test_long_form_text_puts_each_training_storys_text_beside_its_speech(monkeypatch, recipe_cache):
    """`long_form.text`: the training stories' G2P phonemes follow their (recognized) speech; the dev stories
    stay speech only, so the dev NLL that picks the base is measured on speech. The stories of the recipe
    runs above (same corpus plan): their speech comes from the shared cache."""
    from speechrl.align.long_form import story_units
    from speechrl.corpus.build import CorpusConfig
    from speechrl.models.hub import cache_dir
    from speechrl.pipelines import align_slm
    from speechrl.speech.units import text_phonemes

    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    recipe = align_slm.AlignSLMRecipe(corpus=CorpusConfig(size=30, evaluate=False),
                                      long_form=align_slm.LongFormConfig(stories=2, dev_stories=1, text=True))
    stories = align_slm.long_form_stories(recipe)
    speech = story_units(stories, recipe.corpus.voices, recipe.corpus.speeds, 0, cache_dir() / "long_form")
    train, dev = align_slm.long_form_sequences(recipe)
    assert dev == [speech[stories[0].id]] and train[:2] == [speech[st.id] for st in stories[1:]]
    assert train[2:] == [text_phonemes(" ".join(x.text for x in st.sentences)).ids for st in stories[1:]]
    assert train[2:] != train[:2]  # the text is not what the recognizer heard
