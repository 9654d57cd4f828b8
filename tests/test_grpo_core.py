"""The shared GRPO pieces by hand: group statistics with missing rewards masked, dynamic sampling, the DDP
weight of token-mean losses, the mixed policy's reference row without KL, input shapes checked, and
log-probs at the rollout temperature equal to TRL's own routine."""

import math
import pytest
import torch

from speechrl.losses.grpo import grpo_loss
from speechrl.losses.logps import token_logps
from speechrl.trainers.grpo_core import GRPOConfig, score_groups, train_weight


class OneRank:
    device = torch.device("cpu")
    num_processes = 1

    def reduce(self, tensor, op):
        return tensor


class TwoRanks(OneRank):
    """A rank of a 2-process run whose peer holds ``peer`` (the value reduced with this rank's)."""

    num_processes = 2

    def __init__(self, peer):
        self.peer = peer

    def reduce(self, tensor, op):
        return tensor + torch.as_tensor(self.peer, dtype=tensor.dtype)


def test_missing_rewards_leave_their_group_statistics_and_are_not_trained_on():
    rewards = torch.tensor([1.0, math.nan, 3.0, 0.0, 2.0, 2.0, math.inf, 2.0])
    groups = score_groups(rewards, torch.full((8,), 4), GRPOConfig(group_size=4, dynamic_sampling=True), OneRank())
    mean = 4 / 3  # group 1's valid rewards 1, 3, 0; unbiased std over those 3
    std = math.sqrt(((1 - mean) ** 2 + (3 - mean) ** 2 + mean ** 2) / 2)
    expected = [(1 - mean) / (std + 1e-4), 0.0, (3 - mean) / (std + 1e-4), (0 - mean) / (std + 1e-4)]
    assert groups.advantages[:4].tolist() == pytest.approx(expected, abs=1e-6)
    # group 2: valid rewards all equal → zero variance → dropped (dynamic sampling); the inf row masked
    assert groups.keep.tolist() == [True, False, True, True, False, False, False, False]
    assert groups.metrics["invalid_rewards"] == 2 and groups.metrics["kept_samples"] == 3
    assert groups.metrics["zero_variance_groups"] == 1 and groups.metrics["positive_advantage"] == 1
    assert groups.metrics["reward"] == pytest.approx((1 + 3 + 0 + 2 + 2 + 2) / 6)


def test_the_mixed_policy_reference_row_is_not_in_the_logged_rollout_reward():
    rewards = torch.tensor([0.0, 0.0, 0.5, 1.0])
    sampled = torch.tensor([True, True, True, False])
    groups = score_groups(rewards, torch.full((4,), 3), GRPOConfig(group_size=4), OneRank(), sampled=sampled)
    assert groups.metrics["reward"] == pytest.approx(0.5 / 3)
    assert groups.advantages[3] > 0  # it still takes part in the group statistics


def test_overlong_penalty_applies_before_the_group_statistics():
    cfg = GRPOConfig(group_size=2, max_new_tokens=10, overlong_cache=4, dynamic_sampling=False)
    groups = score_groups(torch.tensor([1.0, 1.0]), torch.tensor([5, 8]), cfg, OneRank())
    assert groups.metrics["reward"] == pytest.approx((1.0 + 0.5) / 2)  # 8 tokens: ((10−4) − 8)/4 = −0.5
    assert groups.advantages[0] > 0 > groups.advantages[1]


def test_ddp_weight_counts_tokens_for_token_mean_losses_and_sequences_otherwise():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # this rank: 2 sequences, 4 tokens
    # the peer rank trains on 2 sequences of 12 tokens in all
    assert train_weight(TwoRanks(12.0), "dapo", mask, True).item() == pytest.approx(2 * 4 / 16)
    assert train_weight(TwoRanks(2.0), "grpo", mask, True).item() == pytest.approx(2 * 2 / 4)
    assert train_weight(TwoRanks(12.0), "dapo", mask, False).item() == 0.0  # kept nothing: weight 0


def test_the_reference_row_gets_no_kl_term():
    """k3 estimates KL(πθ ‖ π_ref) on tokens sampled from πθ; the mixed policy's reference row is not."""
    logp = torch.log(torch.tensor([[0.5, 0.4], [0.3, 0.6]])).requires_grad_(True)
    adv = torch.tensor([0.0, 1.0])
    mask = torch.ones(2, 2)
    off = torch.tensor([False, True])

    def grad(ref):
        loss, stats = grpo_loss(logp, None, ref, adv, mask, beta=0.5, off_policy=off)
        return torch.autograd.grad(loss, logp)[0], stats

    g1, stats = grad(torch.log(torch.tensor([[0.5, 0.4], [0.9, 0.1]])))
    g2, _ = grad(torch.log(torch.tensor([[0.5, 0.4], [0.01, 0.99]])))
    torch.testing.assert_close(g1[1], g2[1])  # the reference row's gradient does not see π_ref
    assert stats["kl"].item() == pytest.approx(0.0, abs=1e-7)  # on-policy row: π_ref = πθ


@pytest.mark.parametrize("bad, message", [
    (dict(advantages=torch.zeros(3, 1)), "advantages must be"),
    (dict(mask=torch.ones(3, 5)), "mask has shape"),
    (dict(off_policy=torch.zeros(2, dtype=torch.bool)), "off_policy must be"),
])
def test_loss_inputs_of_the_wrong_shape_are_an_error_not_a_broadcast(bad, message):
    args = dict(advantages=torch.zeros(3), mask=torch.ones(3, 4), off_policy=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        grpo_loss(torch.zeros(3, 4), None, None, args["advantages"], args["mask"], off_policy=args["off_policy"])


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_log_probs_at_the_rollout_temperature_match_trl(temperature):
    from trl.trainer.utils import selective_log_softmax

    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 17) * 3, torch.randint(0, 17, (3, 5))
    ours = token_logps(logits, labels, temperature)
    torch.testing.assert_close(ours, selective_log_softmax(logits, labels, temperature=temperature))
    assert not torch.allclose(ours, token_logps(logits, labels))  # T matters
    assert token_logps(logits, labels, 1.0).equal(token_logps(logits, labels))
    with pytest.raises(ValueError, match="temperature"):
        token_logps(logits, labels, 0.0)


def test_the_shared_config_is_one_block_for_both_trainers():
    from dataclasses import fields

    from speechrl.trainers.grpo import SpeechGRPOConfig
    from speechrl.trainers.tts_rl import TTSRLConfig

    shared = {f.name for f in fields(GRPOConfig)}
    assert {"epsilon_high", "dynamic_sampling", "overlong_cache", "num_iterations", "temperature"} <= shared
    for cls in (SpeechGRPOConfig, TTSRLConfig):
        assert issubclass(cls, GRPOConfig)
        assert not set(vars(cls).get("__annotations__", {})) & shared  # no shared field declared again
