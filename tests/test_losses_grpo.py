"""GRPO-family losses: hand-computed values for every function and loss type, then parity with
TRL 1.16's ``GRPOTrainer._compute_loss`` on the same tensors."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from speechrl.losses import (
    group_advantages,
    grpo_loss,
    k3_kl,
    soft_overlong_penalty,
    token_logps,
    zero_variance_groups,
)

LN2 = math.log(2.0)


def test_group_advantages_std_and_none():
    # Two groups of G = 2. Group 0: rewards 1, 0 → mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1).
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert torch.allclose(group_advantages(rewards, 2), torch.tensor([a, -a, 0.0, 0.0]))
    assert torch.allclose(group_advantages(rewards, 2, scale="none"), torch.tensor([0.5, -0.5, 0.0, 0.0]))
    # G = 3: rewards 0, 1, 2 → mean 1, unbiased std 1.
    assert torch.allclose(group_advantages(torch.tensor([0, 1, 2]), 3), torch.tensor([-1.0, 0, 1]) / 1.0001)
    assert torch.equal(group_advantages(torch.tensor([3.0, 5.0]), 1), torch.zeros(2))


def test_groups_must_divide_the_batch():
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(torch.zeros(4), 3)


def test_zero_variance_groups():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    assert zero_variance_groups(rewards, 2).tolist() == [False, True, True]
    assert zero_variance_groups(rewards, 3).tolist() == [False, False]


def test_k3_kl():
    # d = ref − logp: KL = e^d − d − 1 → d=0: 0; d=ln2: 2 − ln2 − 1; d=−ln2: 0.5 + ln2 − 1.
    logp = torch.tensor([-1.0, -1.0 - LN2, -1.0 + LN2])
    kl = k3_kl(logp, torch.full((3,), -1.0))
    assert torch.allclose(kl, torch.tensor([0.0, 1.0 - LN2, LN2 - 0.5]))


def test_soft_overlong_penalty():
    # L = 10, C = 4: free up to 6, linear ramp (6 − |y|)/4 up to 10, −1 beyond.
    lengths = torch.tensor([3, 6, 7, 10, 11])
    assert torch.allclose(soft_overlong_penalty(lengths, 10, 4), torch.tensor([0.0, 0.0, -0.25, -1.0, -1.0]))


# A batch of N = 4 completions, T = 3 tokens. Ratios s = exp(logp − old_logp) are chosen so that
# clipping (ε = 0.2) is active on two tokens; 9.0 sits on masked positions and must not matter.
ADV = torch.tensor([1.0, -1.0, 2.0, -0.5])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
RATIOS = torch.tensor([[1.0, 1.5, 0.5], [0.5, 1.5, 9.0], [1.1, 9.0, 9.0], [1.0, 1.0, 1.0]])
# Per-token l = min(s·Â, clip(s, 0.8, 1.2)·Â):
#   row 0 (Â=+1):   1.0, min(1.5, 1.2)=1.2 [high clip], min(0.5, 0.8)=0.5 [Â>0: no clip]
#   row 1 (Â=−1):   min(−0.5, −0.8)=−0.8 [low clip], min(−1.5, −1.2)=−1.5 [Â<0: no clip]
#   row 2 (Â=+2):   2.2
#   row 3 (Â=−0.5): −0.5, −0.5, −0.5
ROW_SUMS = [2.7, -2.3, 2.2, -1.5]  # total 1.1 over 9 tokens
ROW_MEANS = [0.9, -1.15, 2.2, -0.5]  # mean 0.3625


def _logps(ratios=RATIOS):
    old = torch.full_like(ratios, -2.0)
    return (old + ratios.log()).requires_grad_(True), old


@pytest.mark.parametrize("loss_type,expected", [
    ("grpo", -sum(ROW_MEANS) / 4),      # −(0.9 − 1.15 + 2.2 − 0.5)/4 = −0.3625
    ("dapo", -1.1 / 9),                 # −Σ l / Σ|o_i|
    ("bnpo", -1.1 / 9),
    ("dr_grpo", -1.1 / (4 * 4)),        # −Σ l / (N·L), L = 4
])
def test_grpo_loss_types_by_hand(loss_type, expected):
    logp, old = _logps()
    loss, stats = grpo_loss(logp, old, None, ADV, MASK, loss_type=loss_type, max_completion_length=4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clip_frac_low"].item() == pytest.approx(1 / 9)   # row 1 token 0
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 9)  # row 0 token 1
    assert stats["ratio"].item() == pytest.approx(9.1 / 9)
    assert "kl" not in stats and not stats["ratio"].requires_grad


def test_clip_higher_only_moves_the_upper_bound():
    # ε_high = 0.6: row 0 token 1 (s = 1.5, Â > 0) is no longer clipped: l = 1.5 instead of 1.2.
    # Row 1 token 0 (s = 0.5, Â < 0) still hits the lower bound 0.8.
    logp, old = _logps()
    loss, stats = grpo_loss(logp, old, None, ADV, MASK, loss_type="dapo", eps_high=0.6)
    assert loss.item() == pytest.approx(-(1.1 + 0.3) / 9, abs=1e-6)
    assert stats["clip_frac_high"].item() == 0.0 and stats["clip_frac_low"].item() == pytest.approx(1 / 9)


def test_clipped_tokens_get_no_gradient():
    # ∂l/∂logp = s·Â where the unclipped branch is the min, 0 where the clipped constant is.
    logp, old = _logps()
    loss, _ = grpo_loss(logp, old, None, ADV, MASK, loss_type="dapo")
    loss.backward()
    expected = -(RATIOS * ADV[:, None]) * MASK / 9
    expected[0, 1] = 0.0  # high clip
    expected[1, 0] = 0.0  # low clip
    assert torch.allclose(logp.grad, expected, atol=1e-6)


@pytest.mark.parametrize("loss_type,kl_weight", [("grpo", 1.0), ("dapo", 1.0), ("dr_grpo", 9 / 16)])
def test_kl_penalty_by_hand(loss_type, kl_weight):
    # ref_logp = logp + ln2 on every token → k3 KL = 2 − ln2 − 1 = 1 − ln2 per token. Each x = l − β·KL
    # shifts every normaliser's mean by β(1 − ln2) (dr_grpo: by 9 tokens / (N·L = 16)).
    logp, old = _logps()
    ref = logp.detach() + LN2
    base, _ = grpo_loss(logp, old, ref, ADV, MASK, loss_type=loss_type, max_completion_length=4)
    loss, stats = grpo_loss(logp, old, ref, ADV, MASK, loss_type=loss_type, beta=0.1, max_completion_length=4)
    assert (loss - base).item() == pytest.approx(0.1 * (1 - LN2) * kl_weight, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(1 - LN2, abs=1e-6)
    assert base.item() == pytest.approx(grpo_loss(logp, old, None, ADV, MASK, loss_type=loss_type,
                                                  max_completion_length=4)[0].item())  # β = 0 skips the KL


def test_mixed_policy_row_is_unclipped_ratio_against_one():
    # Row 1 is the ground-truth reference (off-policy): s = πθ/1 = exp(logp), no clipping.
    # Its tokens have πθ = 0.5 and 0.25 with Â = −1: clipped would be min(−0.5, −0.8) = −0.8;
    # unclipped gives −0.5 and −0.25. old_logp on that row is ignored.
    logp, old = _logps()
    logp = logp.detach().clone()
    logp[1] = torch.tensor([math.log(0.5), math.log(0.25), 0.0])
    logp.requires_grad_(True)
    off = torch.tensor([False, True, False, False])
    loss, stats = grpo_loss(logp, old, None, ADV, MASK, loss_type="dapo", off_policy=off)
    total = 2.7 + (-0.5 - 0.25) + 2.2 - 1.5
    assert loss.item() == pytest.approx(-total / 9, abs=1e-6)
    loss.backward()
    assert torch.allclose(logp.grad[1], torch.tensor([0.5, 0.25, 0.0]) / 9)  # −∂(s·Â)/∂logp / 9 = s/9
    # Stats count on-policy tokens only: 7 tokens, one clipped high (row 0), none low.
    assert stats["clip_frac_high"].item() == pytest.approx(1 / 7) and stats["clip_frac_low"].item() == 0.0
    assert stats["ratio"].item() == pytest.approx((3.0 + 1.1 + 3.0) / 7)


def test_mu_one_gradient_is_plain_policy_gradient():
    # With old_logp = logp.detach() (μ = 1), s ≡ 1, nothing is clipped and
    # ∇loss = −(1/N) Σ_i (1/|o_i|) Σ_t Â_i ∇log πθ(o_i,t) for "grpo". Checked through real logits.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 5, generator=gen, requires_grad=True)
    labels = torch.randint(0, 5, (4, 3), generator=gen)
    adv = torch.tensor([3.0, -3.0, 0.5, -0.5])  # large |Â|: would be clipped if s moved
    logp = token_logps(logits, labels)
    loss, stats = grpo_loss(logp, None, None, adv, MASK, loss_type="grpo")
    (grad,) = torch.autograd.grad(loss, logits)
    assert stats["ratio"].item() == 1.0
    assert stats["clip_frac_low"].item() == stats["clip_frac_high"].item() == 0.0
    pg = -((adv[:, None] * token_logps(logits, labels) * MASK).sum(-1) / MASK.sum(-1)).mean()
    (pg_grad,) = torch.autograd.grad(pg, logits)
    assert loss.item() == pytest.approx(-((adv[:, None] * MASK).sum(-1) / MASK.sum(-1)).mean().item())
    assert torch.allclose(grad, pg_grad, atol=1e-6)


def test_dr_grpo_needs_max_length_and_unknown_type_fails():
    logp, old = _logps()
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logp, old, None, ADV, MASK, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="unknown loss_type"):
        grpo_loss(logp, old, None, ADV, MASK, loss_type="ppo")


# ---------------------------------------------------------------------------------------------------
# Parity with TRL 1.16
# ---------------------------------------------------------------------------------------------------

def _trl_grpo(logp, old, ref, adv, mask, *, loss_type, eps_low, eps_high, beta, max_len, bias_correction):
    """Run TRL's own ``GRPOTrainer._compute_loss`` on fixed tensors.

    The trainer is not constructed (its __init__ needs a model, datasets and accelerate state); the unbound
    method gets a ``SimpleNamespace`` self holding exactly the attributes it reads, and
    ``_get_per_token_logps_and_entropies`` returns our ``logp`` instead of running a model. One process,
    one micro-batch, no gradient accumulation, ``importance_sampling_level="token"``, no vLLM, no
    entropy masking or bonus: under these settings TRL's "dapo" normaliser (``num_items_in_batch``) is
    the batch's token count, as ours.
    """
    from trl.trainer.grpo_trainer import GRPOTrainer

    identity = lambda x, **_: x  # noqa: E731
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, max_completion_length=max_len, use_vllm=False,
        vllm_importance_sampling_correction=False, _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1, model=SimpleNamespace(training=True),
        args=SimpleNamespace(use_bias_correction_kl=bias_correction, delta=None, steps_per_generation=1),
        accelerator=SimpleNamespace(num_processes=1, reduce=identity, gather=identity,
                                    gather_for_metrics=identity),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    n, t = logp.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long), "completion_mask": mask,
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, fake._metrics["train"]


PARITY_CASES = [  # loss_type, eps_low, eps_high, beta, TRL's use_bias_correction_kl
    ("grpo", 0.2, 0.2, 0.0, False), ("grpo", 0.2, 0.28, 0.04, False), ("grpo", 0.2, 0.2, 0.04, True),
    ("bnpo", 0.2, 0.28, 0.0, False), ("bnpo", 0.2, 0.2, 0.04, False),
    ("dapo", 0.2, 0.28, 0.0, False), ("dapo", 0.2, 0.28, 0.04, True),
    ("dr_grpo", 0.2, 0.2, 0.0, False), ("dr_grpo", 0.1, 0.3, 0.04, False),
]


@pytest.mark.parametrize("loss_type,eps_low,eps_high,beta,bias_correction", PARITY_CASES)
def test_parity_with_trl_compute_loss(loss_type, eps_low, eps_high, beta, bias_correction):
    gen = torch.Generator().manual_seed(1)
    n, t, max_len = 8, 6, 7
    mask = (torch.arange(t)[None] < torch.randint(1, t + 1, (n, 1), generator=gen)).float()
    base = -torch.rand(n, t, generator=gen) * 3
    old = base + 0.3 * torch.randn(n, t, generator=gen)  # ratios roughly in [0.4, 2.5]: both clips active
    ref = base + 0.3 * torch.randn(n, t, generator=gen)
    adv = group_advantages(torch.rand(n, generator=gen), group_size=4)

    ours_logp = base.clone().requires_grad_(True)
    ours, stats = grpo_loss(ours_logp, old, ref, adv, mask, loss_type=loss_type, eps_low=eps_low,
                            eps_high=eps_high, beta=beta, max_completion_length=max_len,
                            kl_importance_weighted=bias_correction)
    trl_logp = base.clone().requires_grad_(True)
    theirs, metrics = _trl_grpo(trl_logp, old, ref, adv, mask, loss_type=loss_type, eps_low=eps_low,
                                eps_high=eps_high, beta=beta, max_len=max_len,
                                bias_correction=bias_correction)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    ours.backward()
    theirs.backward()
    assert torch.allclose(ours_logp.grad, trl_logp.grad, atol=1e-7)
    assert 0 < metrics["clip_ratio/low_mean"][0] and 0 < metrics["clip_ratio/high_mean"][0]
    assert stats["clip_frac_low"].item() == pytest.approx(metrics["clip_ratio/low_mean"][0])
    assert stats["clip_frac_high"].item() == pytest.approx(metrics["clip_ratio/high_mean"][0])
    if beta:
        assert stats["kl"].item() == pytest.approx(metrics["kl"][0], abs=1e-6)


def test_trl_default_kl_bias_correction_changes_gradient_not_value_at_mu_one():
    """TRL 1.16 defaults to ``use_bias_correction_kl=True`` (KL·s); ours (DeepSeekMath's k3 term) has no s. At μ = 1
    (s ≡ 1) the two losses are equal in value but their gradients differ."""
    gen = torch.Generator().manual_seed(2)
    base = -torch.rand(4, 3, generator=gen) * 2
    ref, adv = base + 0.5 * torch.randn(4, 3, generator=gen), torch.tensor([1.0, -1.0, 0.5, -0.5])
    grads, values = [], []
    for weighted in (False, True):
        logp = base.clone().requires_grad_(True)
        loss, _ = grpo_loss(logp, None, ref, adv, MASK, beta=0.1, kl_importance_weighted=weighted)
        loss.backward()
        grads.append(logp.grad)
        values.append(loss.item())
    assert values[0] == pytest.approx(values[1]) and not torch.allclose(grads[0], grads[1])


def test_group_advantages_match_trl_group_scaling():
    """TRL computes advantages inside ``_generate_and_score_completions`` (needs a model and rollouts), so
    this reproduces its ``scale_rewards="group"`` / ``"none"`` lines with TRL's own ``nanstd``."""
    from trl.trainer.utils import nanstd

    rewards = torch.rand(12, generator=torch.Generator().manual_seed(3))
    g = 4
    mean = rewards.view(-1, g).mean(dim=1).repeat_interleave(g)
    std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g)
    assert torch.allclose(group_advantages(rewards, g), (rewards - mean) / (std + 1e-4), atol=1e-6)
    assert torch.allclose(group_advantages(rewards, g, scale="none"), rewards - mean, atol=1e-6)


def test_missing_rewards_are_left_out_of_the_group_statistics():
    # group [1, 1, NaN, 1]: the valid rewards are equal → Â = 0 everywhere and the group is zero-variance
    r = torch.tensor([1.0, 1.0, math.nan, 1.0, 0.0, 2.0, math.nan, 4.0])
    adv = group_advantages(r, 4)
    assert torch.equal(adv[:4], torch.zeros(4))
    # group [0, 2, NaN, 4]: mean 2, unbiased std 2 → Â = (−1, 0, 0, 1) (÷ (2 + 1e-4))
    torch.testing.assert_close(adv[4:], torch.tensor([-1.0, 0.0, 0.0, 1.0]) * 2 / (2 + 1e-4))
    assert zero_variance_groups(r, 4).tolist() == [True, False]
    assert zero_variance_groups(torch.tensor([math.nan, 3.0]), 2).tolist() == [True]  # one valid reward
