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
