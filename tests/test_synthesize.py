"""Speech synthesis: every catalogue voice speaks, bit-identically across calls and processes, at the
asked speed, and bad requests fail with clear errors. Engines load once for the module (~3 s)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechrl.audio import SAMPLE_RATE
from speechrl.speech.synthesize import ENGINES, VOICES, Voice, get_voice, synthesize

SENTENCE = "The old farmer walked his dog to the village before the rain."  # 12 words
# One voice per engine, plus a Klatt one: eSpeak's Klatt generator keeps its own state between calls.
PROBES = ("espeak-us-f2", "espeak-us-klatt4", "piper-joe", "hibari")


def sha(wav: np.ndarray) -> str:
    return hashlib.sha256(wav.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def spoken() -> dict[str, np.ndarray]:
    return {name: synthesize(SENTENCE, voice) for name, voice in VOICES.items()}


def test_catalogue_has_distinct_voices_of_every_engine():
    assert len(VOICES) >= 6
    assert all(name == voice.name for name, voice in VOICES.items())
    assert {voice.engine for voice in VOICES.values()} == set(ENGINES)
    espeak = [voice.variant for voice in VOICES.values() if voice.engine == "espeak"]
    assert len(espeak) == len(set(espeak)) >= 4


@pytest.mark.parametrize("name", sorted(VOICES))
def test_voice_speaks_plausible_16k_audio(spoken, name):
    wav = spoken[name]
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.all(np.isfinite(wav)) and np.max(np.abs(wav)) <= 1.0
    assert np.sqrt(np.mean(np.square(wav))) > 0.01  # speech, not near-silence
    seconds = wav.size / SAMPLE_RATE
    assert 12 * 0.15 < seconds < 12 * 0.75, f"{name}: {seconds:.2f} s for 12 words"


def test_voices_sound_different(spoken):
    assert len({sha(wav) for wav in spoken.values()}) == len(spoken)


@pytest.mark.parametrize("name", PROBES)
def test_same_call_gives_identical_samples(spoken, name):
    # The fixture spoke every other voice after this one: state must not leak between utterances.
    synthesize("Something different, said quickly!", get_voice("espeak-gb-m6"), speed=1.3, seed=5)
    np.testing.assert_array_equal(synthesize(SENTENCE, get_voice(name)), spoken[name])


def test_identical_in_a_fresh_process_and_nothing_loads_at_import(spoken):
    code = f"""
import hashlib, json, sys
import speechrl.speech.synthesize as S
assert not S._ENGINES and not {{"piper", "hibari"}} & set(sys.modules), "engine loaded at import"
S.synthesize("Another voice speaks first.", S.get_voice("espeak-us-m1"), speed=0.7)
print(json.dumps({{n: hashlib.sha256(S.synthesize({SENTENCE!r}, S.get_voice(n)).tobytes()).hexdigest()
                  for n in {tuple(reversed(PROBES))!r}}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {name: sha(spoken[name]) for name in PROBES}


def test_hibari_seed_changes_its_noise_not_its_timing(spoken):
    assert sha(synthesize(SENTENCE, get_voice("hibari"), seed=1)) != sha(spoken["hibari"])
    assert synthesize(SENTENCE, get_voice("hibari"), seed=1).size == spoken["hibari"].size


@pytest.mark.parametrize("name", ("espeak-us-m1", "espeak-gb-f3", "piper-joe", "hibari"))
def test_faster_speech_is_shorter(name):
    voice = get_voice(name)
    fast, slow = synthesize(SENTENCE, voice, speed=1.5), synthesize(SENTENCE, voice, speed=0.8)
    assert fast.size < 0.75 * slow.size  # ideal ratio 0.8 / 1.5 = 0.53, plus fixed pauses


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_raises(text):
    with pytest.raises(ValueError, match="empty text"):
        synthesize(text, get_voice("espeak-us-m1"))


def test_unknown_voice_lists_the_allowed_names():
    with pytest.raises(KeyError) as err:
        get_voice("espeak-xx-robot")
    assert "espeak-xx-robot" in str(err.value)
    assert all(name in str(err.value) for name in VOICES)


@pytest.mark.parametrize("speed", [0.0, -1.0, 3.0, float("nan")])
def test_speed_out_of_range_raises(speed):
    with pytest.raises(ValueError, match="speed"):
        synthesize(SENTENCE, get_voice("hibari"), speed=speed)


def test_bad_voice_definitions_raise():
    with pytest.raises(ValueError, match="unknown engine"):
        Voice("festival-kal", "festival")
    with pytest.raises(ValueError, match="no voice"):
        synthesize("Hello there.", Voice("espeak-zz", "espeak", "zz-nowhere+m1"))


def test_text_without_speech_raises():
    with pytest.raises(ValueError, match="no speech"):
        synthesize("...", get_voice("espeak-us-m1"))
