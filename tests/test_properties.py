"""Property-based tests (hypothesis): for any input, the documented outcome and nothing else.

- every reward in ``speechrl.rewards.REWARDS`` (and their weighted combination): one value per
  completion, each finite and inside the reward's documented ``value_range``;
- text normalisation and error rates (``speechrl.text``): never raise on a string, canonical output,
  idempotent, error rates finite and >= 0;
- the audio loader (``speechrl.audio``): any bytes in a file, and any float array through
  ``validate``/``resample``, give a valid 16 kHz mono signal or an ``AudioError`` — never another
  exception.

Example counts are small (the suite runs on 2 CPU cores); ``deadline=None`` because a first call
loads a model or warms a cache.
"""

import math
import string
import unicodedata

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speechrl.audio import MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE, AudioError, load_audio, resample, to_mono, validate
from speechrl.rewards import REWARDS, make_reward
from speechrl.text import cer, normalize, normalize_for_scoring, sentence_wer, wer

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- rewards -------------------------------------------------------------------------------------

SAMPLES = ["", " ", "The cat sat on the mat.", "the cat sat on the mat", "el gato está en la casa",
           "la la la la la la", "thank you " * 6, "3rd of 1,000 at 7pm: 21% off!", "1" * 5000,
           "¿Qué? ¡Sí! — 東京 🎉 naïve café", "\u200b\u00ad", "'''", "new york new york"]
texts = st.sampled_from(SAMPLES) | st.text(max_size=60) | st.text(string.ascii_lowercase + " ", max_size=60)
completions = texts | st.none() | st.builds(lambda t: [{"role": "assistant", "content": t}], texts)


@st.composite
def reward_batches(draw, max_size=4):
    """(completions, columns) for n samples: every column any built-in reward reads."""
    n = draw(st.integers(1, max_size))
    each = lambda strategy: st.lists(strategy, min_size=n, max_size=n)  # noqa: E731
    columns = {
        "reference": draw(each(texts | st.none())),
        "keywords": draw(each(st.lists(texts, max_size=3) | st.none())),
        "language": draw(each(st.sampled_from(["en", "es", "English", "es-MX", "de", "", None]))),
        "seconds": draw(each(st.floats(0.05, 30.0))),  # rendered audio length, > 0
        "group": draw(each(st.integers(0, 1))),
        "speech_tokens": draw(each(st.lists(st.integers(0, 9), max_size=12))),
    }
    return draw(each(completions)), columns


def _check_in_range(name, fn, values, n):
    low, high = fn.value_range
    assert len(values) == n, name
    for v in values:
        if v is None and name == "keyword_score":  # a sample without keywords: not applicable
            continue
        assert isinstance(v, float) and math.isfinite(v) and low <= v <= high, (name, values)


CHEAP_REWARDS = sorted(name for name in REWARDS if name != "embedding_similarity")


@pytest.mark.parametrize("name", CHEAP_REWARDS)
@FAST
@given(batch=reward_batches())
def test_reward_is_finite_and_in_its_documented_range(name, batch):
    hyps, columns = batch
    fn = REWARDS[name]
    _check_in_range(name, fn, fn(prompts=None, completions=hyps, **columns), len(hyps))


@settings(max_examples=6, deadline=None)
@given(batch=reward_batches(max_size=3))
def test_embedding_similarity_is_finite_and_in_range(batch):
    hyps, columns = batch
    fn = REWARDS["embedding_similarity"]  # loads MiniLM once: few examples
    _check_in_range("embedding_similarity", fn, fn(prompts=None, completions=hyps, **columns), len(hyps))


@FAST
@given(batch=reward_batches(), spec=st.dictionaries(st.sampled_from(CHEAP_REWARDS), st.floats(-3, 3), min_size=1))
def test_weighted_reward_is_the_weighted_sum(batch, spec):
    hyps, columns = batch
    combined = make_reward(spec)
    total = combined(None, hyps, **columns)
    applies = [[k for k in spec if not combined.last_not_applicable[k][i]] for i in range(len(hyps))]
    expected = [sum(w * combined.last_values[k][i] for k, w in spec.items() if k in applies[i])
                if applies[i] else math.nan for i in range(len(hyps))]  # terms not applicable: left out
    assert total == pytest.approx(expected, nan_ok=True)
    assert combined.invalid_total == sum(not a for a in applies)


# --- text normalisation and error rates ----------------------------------------------------------

any_text = st.text(max_size=80) | st.sampled_from(SAMPLES) | st.from_regex(r"[0-9.,%: a-z]{0,40}", fullmatch=True)


@FAST
@given(text=any_text)
@example(text="1" * 5000 + "th")
@example(text="Ⅻ ½ ﬁ ²³ １２")
def test_normalize_gives_canonical_words(text):
    out = normalize(text)
    assert out == out.strip() and "  " not in out
    assert all(ch in " '" or unicodedata.category(ch)[0] in "LNM" for ch in out)  # letters, digits, marks
    for word in out.split():
        assert word[0] != "'" and word[-1] != "'"  # apostrophes only inside words
    assert normalize(out) == out  # idempotent


@FAST
@given(text=any_text, language=st.sampled_from([None, "en", "es", "de"]))
@example(text="1" * 5000 + " twenty one", language=None)
def test_metric_normaliser_never_raises_and_leaves_words(text, language):
    out = normalize_for_scoring(text, language)
    assert out == out.strip() and "  " not in out
    assert all(any(ch.isalnum() for ch in word) for word in out.split())


@FAST
@given(ref=any_text, hyp=any_text)
def test_error_rates_are_finite_and_consistent(ref, hyp):
    rate = sentence_wer(ref, hyp)
    ref_words, hyp_words = len(normalize_for_scoring(ref).split()), len(normalize_for_scoring(hyp).split())
    assert math.isfinite(rate) and rate >= 0
    assert rate <= max(ref_words, hyp_words) / max(ref_words, 1) + 1e-9  # at most one edit per word
    if ref_words == 0:
        assert rate == hyp_words  # the documented blank-reference rule
    assert sentence_wer(ref, ref) == 0.0 and cer([ref], [ref]) == 0.0
    assert math.isfinite(cer([ref], [hyp])) and wer([ref, hyp], [hyp, ref]) >= 0


# --- the audio loader ----------------------------------------------------------------------------


def _loaded_or_audio_error(path, **limits):
    """The loader's contract: a valid signal, or AudioError naming the file. Anything else fails."""
    try:
        wav = load_audio(path, **limits)
    except AudioError as err:
        assert err.path == str(path) and err.reason
        return None
    assert wav.dtype == np.float32 and wav.ndim == 1 and np.all(np.isfinite(wav))
    assert np.max(np.abs(wav)) <= 1.0
    seconds = wav.size / SAMPLE_RATE
    assert MIN_SECONDS - 1e-3 <= seconds <= limits.get("max_seconds", MAX_SECONDS) + 1e-3
    return wav


@FAST
@given(data=st.binary(max_size=4096), header=st.sampled_from([b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"fLaC", b"OggS"]),
       suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_any_bytes_load_or_give_an_audio_error(tmp_path_factory, data, header, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"x{suffix}"
    path.write_bytes(header + data)
    _loaded_or_audio_error(path)


@FAST
@given(wav=arrays(np.float32, st.tuples(st.integers(0, 4000), st.integers(1, 3)),
                  elements=st.floats(-1e6, 1e6, width=32) | st.sampled_from([np.nan, np.inf, 0.0])),
       sr=st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 7919]),
       subtype=st.sampled_from(["FLOAT", "PCM_16", "PCM_U8", "PCM_24"]))
def test_any_signal_written_to_a_file_loads_valid_or_gives_an_audio_error(tmp_path_factory, wav, sr, subtype):
    path = tmp_path_factory.mktemp("wav") / "x.wav"
    sf.write(path, wav, sr, subtype=subtype)
    _loaded_or_audio_error(path, max_seconds=0.2)


@FAST
@given(wav=arrays(np.float32, st.integers(0, 4000), elements=st.floats(width=32)),
       sr=st.integers(1000, 96000))
def test_validate_accepts_exactly_finite_signals_of_sane_length(wav, sr):
    try:
        out = validate(wav, sr)
    except AudioError as err:
        assert err.path == "<array>" and (wav.size == 0 or not np.all(np.isfinite(wav))
                                          or not 0.05 <= wav.size / sr <= MAX_SECONDS)
    else:
        assert out is wav and np.all(np.isfinite(wav))


@FAST
@given(wav=arrays(np.float32, st.integers(1, 3000), elements=st.floats(-1, 1, width=32)),
       sr_in=st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]) | st.integers(1000, 96000))
def test_resample_keeps_length_and_never_exceeds_full_scale(wav, sr_in):
    out = resample(wav, sr_in)
    assert out.dtype == np.float32 and np.all(np.isfinite(out)) and np.max(np.abs(out), initial=0) <= 1.0
    assert abs(out.size - wav.size * SAMPLE_RATE / sr_in) <= 1 + 0.002 * out.size  # ratio limited to /1000


@FAST
@given(wav=arrays(np.float32, st.tuples(st.integers(0, 50), st.integers(1, 4)), elements=st.floats(-1, 1, width=32)))
def test_to_mono_averages_channels(wav):
    out = to_mono(wav)
    assert out.shape == (wav.shape[0],)
    np.testing.assert_allclose(out, wav.mean(axis=1), rtol=1e-6, atol=1e-7)
