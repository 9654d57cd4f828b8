"""TTS rewards: R2 duration and R3 diversity by hand, registered in REWARDS, combined with R1."""

import math

import pytest

from speechrl.rewards import REWARDS, make_reward
from speechrl.rewards.tts import tts_diversity, tts_duration


def test_duration_reward_is_relative_distance_to_the_group_median():
    seconds = [2.0, 3.0, 4.0, 1.0, 1.0, 4.0]
    group = [0, 0, 0, 1, 1, 1]
    values = tts_duration(None, [""] * 6, seconds=seconds, group=group)
    # group 0: median 3 → −1/3, 0, −1/3; group 1: median 1 → 0, 0, −3
    assert values == pytest.approx([-1 / 3, 0.0, -1 / 3, 0.0, 0.0, -3.0])
    assert math.isnan(tts_duration(None, ["", ""], seconds=[0.0, 0.0], group=[0, 0])[0])
    with pytest.raises(ValueError, match="group"):
        tts_duration(None, ["", ""], seconds=[1.0, 2.0], group=None)


def test_diversity_reward_is_mean_normalised_edit_distance_within_the_group():
    tokens = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4], [7]]
    values = tts_diversity(None, [""] * 4, speech_tokens=tokens, group=[0, 0, 0, 1])
    # d(0,1) = 1/4, d(0,2) = 0, d(1,2) = 1/4; a lone sample scores 0
    assert values == pytest.approx([1 / 8, 1 / 4, 1 / 8, 0.0])


def test_tts_rewards_are_registered_and_combine_with_r1():
    assert {"tts_duration", "tts_diversity"} <= set(REWARDS)
    reward = make_reward({"tanh_wer": 1.0, "tts_duration": 0.5})
    texts = ["anna went home", "anna went home"]
    total = reward(texts, ["anna went home", "anna went"], reference=texts, seconds=[2.0, 1.0], group=[0, 0])
    # tanh_wer: 1 and 1 − tanh(1); duration: median 1.5 → −1/3 each
    assert total == pytest.approx([1 - 0.5 / 3, 1 - math.tanh(1.0) - 0.5 / 3])
    assert set(reward.last_values) == {"tanh_wer", "tts_duration"}


def test_the_evaluation_renderer_transcribes_each_unit_sequence_once_with_the_same_result(phon):
    """evaluation_renderer: a unit sequence heard before gives its remembered transcript without Whisper
    (Piper renders it to the same audio), and what it returns equals a fresh one-clip-at-a-time
    transcription."""
    import numpy as np

    from conftest import speak
    from speechrl.rewards.tts import UnitRenderer, evaluation_renderer

    units = [phon.encode(w) for w in speak(["Anna went home.", "Tom found a red key."])]
    evaluator = evaluation_renderer()
    heard = []
    transcribe = evaluator.transcribe
    evaluator.transcribe = lambda wavs: heard.append(len(wavs)) or transcribe(wavs)
    wavs, first = evaluator(units)
    again_wavs, again = evaluator([units[1], units[0], units[1]])
    assert heard == [2, 0] and again == [first[1], first[0], first[1]]
    assert all(np.array_equal(a, b) for a, b in zip(again_wavs, [wavs[1], wavs[0], wavs[1]]))
    assert first == UnitRenderer(transcriber=evaluator.transcriber)(units)[1] and "home" in first[0].lower()
    assert evaluator.windowed(10) is not evaluator and evaluator.windowed(10)._heard is None  # another listener
