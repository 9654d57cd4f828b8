"""speechrl.speech.units: hama phoneme units on real (Piper) speech, MFCC and tiny-HuBERT k-means.

Offline: hama's packaged ASR model, Piper "joe" (noise off: deterministic), a random 2-layer HuBERT
built here. Runs in a few seconds on 2 cores.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from conftest import speak

from speechrl.audio import resample
from speechrl.speech.units import (BLANK_ID, WORD_BOUNDARY, WORD_BOUNDARY_ID, HubertKMeansTokenizer,
                                   MFCCKMeansTokenizer, PhonemeUnitTokenizer, Units,
                                   ctc_frames_to_units, dedup, make_unit_tokenizer, mfcc_features)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She bought three apples and twelve eggs at the market.",
]


@pytest.fixture(scope="module")
def speech():
    """The sentences spoken by Piper joe, 16 kHz float32."""
    return speak(SENTENCES)


# -- Units / dedup ------------------------------------------------------------------------------

def test_dedup_hand_made():
    u = Units([5, 5, 5, 7, 7, 5, 9, 9, 9, 9], [1] * 10, "mfcc-kmeans", 50.0)
    d = dedup(u)
    assert d.ids == [5, 7, 5, 9]
    assert d.durations == [3, 2, 1, 4]
    assert d.kind == "mfcc-kmeans" and d.frame_rate == 50.0
    assert dedup(d) == d  # idempotent
    # durations are summed, not counted; None counts one frame per unit
    assert dedup(Units([1, 1, 2], [2, 3, 4])).durations == [5, 4]
    assert dedup(Units([3, 3, 3, 4])).durations == [3, 1]
    assert dedup(Units([], [])).ids == []
    assert MFCCKMeansTokenizer().dedup(u) == d


def test_units_validation_and_dict_roundtrip():
    with pytest.raises(ValueError):
        Units([1, 2], [1])
    with pytest.raises(ValueError):
        Units([1], [0])
    u = Units([1, 2, 3], [2, 2, 1], "phoneme", 50.0)
    assert u.num_frames == 5 and u.seconds == pytest.approx(0.1)
    assert Units.from_dict(u.to_dict()) == u
    assert Units([1, 2]).seconds is None


def test_ctc_collapse_rules():
    B, W = BLANK_ID, WORD_BOUNDARY_ID
    frames = [B, B, 10, 10, B, 20, B, B, 20, W, W, B, 30, B]
    u = ctc_frames_to_units(frames)
    # leading blanks -> a leading boundary; repeats collapse; blank-separated repeats stay two units;
    # blanks join the unit before them
    assert u.ids == [W, 10, 20, 20, W, 30]
    assert u.durations == [2, 3, 3, 1, 3, 2]
    assert sum(u.durations) == len(frames)
    assert ctc_frames_to_units([B, B, B]).ids == [W]
    assert ctc_frames_to_units([]).ids == []


# -- hama phoneme units ---------------------------------------------------------------------------

def test_phoneme_units_from_real_speech(phon, speech):
    for wav in speech:
        n_frames_expected = len(wav) / 320  # 50 frames/s at 16 kHz
        u = phon.encode(wav)
        assert u.kind == "phoneme" and u.frame_rate == 50.0
        assert len(u) > 15
        assert all(0 <= i < phon.vocab_size for i in u.ids)
        assert BLANK_ID not in u.ids
        assert abs(sum(u.durations) - n_frames_expected) <= 2
        assert u.seconds == pytest.approx(len(wav) / 16000, abs=0.05)
        # word boundaries present: about one per word
        assert 5 <= u.ids.count(WORD_BOUNDARY_ID) <= 15
        # units are already CTC-collapsed: dedup changes at most a few blank-separated repeats
        assert len(phon.dedup(u)) >= len(u) - 3
    # same input, same units
    assert phon.encode(speech[0]) == phon.encode(speech[0])


def test_phoneme_ipa_is_plausible(phon, speech):
    u = phon.encode(speech[0])  # "The quick brown fox jumps over the lazy dog."
    sym = phon.ipa(u)
    assert WORD_BOUNDARY in sym
    inventory = set(sym)
    for expected in ["ð", "k", "w", "ɹ", "f", "s", "z", "l", "d"]:
        assert expected in inventory, (expected, phon.ipa_text(u))
    assert {"aʊ", "eɪ"} & inventory  # brown / lazy diphthongs
    text = phon.ipa_text(u)
    assert "k w ɪ k" in text  # "quick"
    # ipa <-> ids round trip
    assert phon.from_ipa(sym, u.durations) == u
    with pytest.raises(ValueError):
        phon.from_ipa(["not-a-phoneme"])


def test_pytorch_model_gives_the_units_of_hamas_own_engine(phon, speech):
    """hama's weights run in PyTorch (the default) against hama's native engine: the same frame count and
    log-probs within 0.3 on real speech of two engines' voices, rates and levels, a clipped one, a
    ~10-s one and a 10-ms one; the same frame ids on ≥ 99.9 % of frames and the same units."""
    from speechrl.speech.synthesize import get_voice, synthesize
    from speechrl.speech.units.hama_torch import log_probs

    assert phon.engine == "torch"
    native = PhonemeUnitTokenizer("hama")
    engine = native.model  # hama's ASRModel, loaded once per process
    espeak = synthesize(SENTENCES[0], get_voice("espeak-gb-m6"), speed=1.1)
    clips = [*speech, espeak, 0.5 * speech[1], np.clip(3.0 * speech[0], -1, 1), 3.0 * espeak,
             np.concatenate([*speech, espeak]), np.random.default_rng(0).normal(0, 0.1, 160).astype(np.float32)]
    same = total = 0
    for wav in clips:
        wav = wav.astype(np.float32)
        ref, n = engine.session.run(["log_probs", "out_lengths"], {"waveform": np.clip(wav, -1, 1)[None],
                                                                   "waveform_lengths": np.array([len(wav)])})
        ours = log_probs(wav)
        assert ours.shape == ref[0].shape and n[0] == len(ours) == len(wav) // 320 + 1
        if len(wav) > 400:  # a 10-ms clip is only checked for its shape (the engine pads it otherwise)
            assert np.abs(ours - ref[0]).max() < 0.3
            a, b = native.frame_ids(wav), phon.frame_ids(wav)
            same, total = same + sum(x == y for x, y in zip(a, b)), total + len(a)
            assert native.encode(wav).ids == phon.encode(wav).ids
    assert same / total >= 0.999
    with pytest.raises(ValueError, match="engine"):
        PhonemeUnitTokenizer("onnx")


def test_phoneme_encode_resamples_and_validates(phon, speech):
    wav22 = resample(speech[1], 16000, 22050)
    u = phon.encode(wav22, sr=22050)
    assert abs(sum(u.durations) - len(speech[1]) / 320) <= 3
    with pytest.raises(ValueError):
        phon.encode(np.zeros(0, np.float32))
    with pytest.raises(ValueError):
        phon.encode(np.full(1600, np.nan, np.float32))


# -- MFCC + k-means -------------------------------------------------------------------------------

def test_mfcc_features_shape():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    f = mfcc_features(wav)
    assert f.shape == (51, 39)  # 1 + 16000 // 320 centered frames, 13 x (static, delta, delta2)
    assert np.all(np.isfinite(f))


def test_mfcc_kmeans_deterministic_and_save_load(speech, tmp_path):
    tok = MFCCKMeansTokenizer(k=16).fit(speech, seed=3)
    again = MFCCKMeansTokenizer(k=16).fit(speech, seed=3)
    np.testing.assert_array_equal(tok.centroids, again.centroids)
    other = MFCCKMeansTokenizer(k=16).fit(speech, seed=4)
    assert not np.array_equal(tok.centroids, other.centroids)

    u = tok.encode(speech[0])
    assert u.kind == "mfcc-kmeans" and u.frame_rate == 50.0 and tok.vocab_size == 16
    assert abs(len(u) - len(speech[0]) / 320) <= 1 and u.durations == [1] * len(u)
    assert len(set(u.ids)) >= 8  # speech uses many clusters
    d = tok.dedup(u)
    assert len(d) < len(u) and sum(d.durations) == len(u)

    tok.save(tmp_path / "km")
    assert (tmp_path / "km" / "centroids.safetensors").is_file()
    loaded = make_unit_tokenizer("mfcc-kmeans", path=tmp_path / "km")
    assert isinstance(loaded, MFCCKMeansTokenizer) and loaded.k == 16 and loaded.seed == 3
    assert loaded.encode(speech[0]) == u
    with pytest.raises(ValueError):
        HubertKMeansTokenizer.load(tmp_path / "km")  # wrong kind of tokenizer folder


def test_kmeans_errors(speech):
    with pytest.raises(RuntimeError):
        MFCCKMeansTokenizer().encode(speech[0])  # not fitted
    with pytest.raises(ValueError):
        MFCCKMeansTokenizer(k=10_000).fit(speech[:1])  # fewer frames than clusters


# -- tiny random HuBERT + k-means -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16, 16, 16), conv_stride=(5, 4, 16), conv_kernel=(10, 8, 16),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    path = tmp_path_factory.mktemp("tiny-hubert")
    HubertModel(cfg).save_pretrained(path)
    return path


def test_hubert_kmeans_tiny(tiny_hubert, speech, tmp_path):
    tok = make_unit_tokenizer("hubert-kmeans", model_path=str(tiny_hubert), layer=2, k=8)
    assert isinstance(tok, HubertKMeansTokenizer)
    assert tok.frame_rate == 50.0  # 16000 / (5 * 4 * 16)
    tok.fit(speech, seed=0)
    u = tok.encode(speech[0])
    assert u.kind == "hubert-kmeans" and u.frame_rate == 50.0
    assert abs(len(u) - len(speech[0]) / 320) <= 2
    assert all(0 <= i < 8 for i in u.ids)
    assert sum(tok.dedup(u).durations) == len(u)
    tok.save(tmp_path / "hk")
    loaded = HubertKMeansTokenizer.load(tmp_path / "hk")
    assert loaded.layer == 2 and loaded.model_path == str(tiny_hubert)
    assert loaded.encode(speech[0]) == u
    with pytest.raises(ValueError):
        HubertKMeansTokenizer(model_path=str(tiny_hubert), layer=5, k=8).features(speech[0])


def test_factory_unknown_name():
    with pytest.raises(ValueError, match="phoneme.*mfcc-kmeans.*hubert-kmeans"):
        make_unit_tokenizer("wavlm")
    assert isinstance(make_unit_tokenizer(), PhonemeUnitTokenizer)
    assert make_unit_tokenizer("mfcc-kmeans", k=50).vocab_size == 50


def test_unit_bpe_merges_words_never_across_a_boundary(tmp_path):
    from speechrl.speech.units.bpe import UnitBPE

    b = WORD_BOUNDARY_ID
    word_a, word_b = [5, 7, 9], [11, 12]  # two "words" said again and again, and a rare one
    seqs = [[b, *word_a, b, *word_b], [b, *word_b, b, *word_a, b, *word_a], [b, 3, 4]] * 5
    bpe = UnitBPE.train(seqs, vocab_size=BLANK_ID + 6)
    assert bpe.vocab_size <= BLANK_ID + 6
    assert len(bpe.encode([b, *word_a])) == 1 and len(bpe.encode([b, *word_b])) == 1  # whole words, boundary first
    assert bpe.encode([b, *word_a, b, *word_a]) == bpe.encode([b, *word_a]) * 2
    tokens = bpe.encode([*word_a, b, *word_b, b, 3, 4, 100])
    for t in tokens:  # no token holds a boundary anywhere but at its start
        assert b not in bpe.decode([t])[1:]
    for seq in [*seqs, [100, 3, b, b, 7], [], [b]]:  # any unit sequence round-trips, unseen units included
        assert bpe.decode(bpe.encode(seq)) == seq
    assert UnitBPE.train(seqs, vocab_size=BLANK_ID + 6).encode(seqs[1]) == bpe.encode(seqs[1])  # deterministic
    again = UnitBPE.load(bpe.save(tmp_path / "bpe.json"))
    assert again.vocab_size == bpe.vocab_size and again.encode(seqs[1]) == bpe.encode(seqs[1])
    with pytest.raises(ValueError, match="unit ids"):
        bpe.encode([BLANK_ID])
    with pytest.raises(ValueError, match="smaller than"):
        UnitBPE.train(seqs, vocab_size=10)


def test_lexicon_words_mend_spurious_and_missed_boundaries():
    """Recognized units → lexicon words, worked by hand (merge cost μ = 1): [1 2] is "a" (0); [3 4] + [5]
    is "b" through a spurious boundary (0 + μ, against 1 + dropping [5] at 2); [6 7 1 2] is "c a" through
    a missed boundary (0 + 0 + μ, against "c" alone at 2); [6 8] is "c" with one substitution (1)."""
    from speechrl.speech.units.lexicon import LexiconWords

    lex = LexiconWords(["a", "b", "c"], [(1, 2), (3, 4, 5), (6, 7)])
    wb = WORD_BOUNDARY_ID
    stream = [wb, 1, 2, wb, 3, 4, wb, 5, wb, 6, 7, 1, 2, wb, 6, 8]
    assert lex.decode(lex.encode(stream)) == ["a", "b", "c", "a", "c"]
    assert lex.units([0, 2]) == [wb, 1, 2, wb, 6, 7]
    assert lex.encode(lex.units([2, 1, 0, 0])) == [2, 1, 0, 0] and lex.encode([]) == []
    with pytest.raises(ValueError, match="twice"):
        LexiconWords(["a", "a"], [(1,), (2,)])
