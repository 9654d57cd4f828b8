"""DiffRO pieces: Gumbel-Softmax relaxation, soft embedding, full-vocabulary KL, the filtered loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechrl.losses import diffro_loss, full_token_kl, gumbel_softmax_tokens, soft_embed


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LOGITS = torch.randn(2, 3, 5, generator=_gen(0))


def test_gumbel_is_deterministic_per_generator_and_rows_sum_to_one():
    a = gumbel_softmax_tokens(LOGITS, tau=0.7, generator=_gen(1))
    assert torch.equal(a, gumbel_softmax_tokens(LOGITS, tau=0.7, generator=_gen(1)))
    assert not torch.allclose(a, gumbel_softmax_tokens(LOGITS, tau=0.7, generator=_gen(2)))
    assert a.shape == LOGITS.shape and (a >= 0).all()
    assert torch.allclose(a.sum(-1), torch.ones(2, 3))


def test_gumbel_matches_torch_gumbel_softmax_on_the_global_rng():
    # Same noise recipe as F.gumbel_softmax (−log Exp(1)), so the same seed gives the same sample.
    with torch.random.fork_rng():
        torch.manual_seed(7)
        ours = gumbel_softmax_tokens(LOGITS, tau=0.5)
        torch.manual_seed(7)
        theirs = F.gumbel_softmax(LOGITS, tau=0.5)
    assert torch.allclose(ours, theirs)


def test_gumbel_formula_and_small_tau_approaches_argmax_of_perturbed_logits():
    # Rebuild g from the same generator: ỹ = softmax((logits + g)/τ); as τ → 0, ỹ → one_hot(argmax(logits + g)).
    g = -torch.empty_like(LOGITS).exponential_(generator=_gen(3)).log()
    warm = gumbel_softmax_tokens(LOGITS, tau=2.0, generator=_gen(3))
    assert torch.allclose(warm, ((LOGITS + g) / 2.0).softmax(-1))
    cold = gumbel_softmax_tokens(LOGITS, tau=1e-3, generator=_gen(3))
    one_hot = F.one_hot((LOGITS + g).argmax(-1), 5).float()
    assert torch.allclose(cold, one_hot, atol=1e-4)


def test_straight_through_is_one_hot_forward_soft_backward():
    logits = LOGITS.clone().requires_grad_(True)
    hard = gumbel_softmax_tokens(logits, tau=1.0, hard=True, generator=_gen(4))
    soft = gumbel_softmax_tokens(logits, tau=1.0, hard=False, generator=_gen(4))
    assert torch.equal(hard, F.one_hot(soft.argmax(-1), 5).to(hard.dtype))
    weights = torch.arange(5.0)
    (g_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    (g_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert g_hard.abs().sum() > 0 and torch.allclose(g_hard, g_soft)


def test_soft_embed_by_hand():
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])  # V = 3, D = 2
    y = torch.tensor([[[0.0, 1.0, 0.0], [0.25, 0.75, 0.0]]])
    # one-hot row picks E[1]; [0.25, 0.75, 0]·E = [0.25, 1.5]
    assert torch.allclose(soft_embed(y, E), torch.tensor([[[0.0, 2.0], [0.25, 1.5]]]))


def test_full_token_kl_by_hand():
    # Token a: πθ = [1/2, 1/2], π_ref = [1/4, 3/4] → KL_a = ½·ln(2) + ½·ln(2/3). Token b: πθ = π_ref → 0.
    # Seq 0 = [a, b] (both masked in) → KL_a/2; seq 1 = [a, pad] → KL_a. Mean over sequences 3/4·KL_a.
    kl_a = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    theta = torch.tensor([[[0.0, 0.0], [1.0, 2.0]], [[0.0, 0.0], [9.0, -9.0]]])
    a_ref = [math.log(0.25), math.log(0.75)]
    ref = torch.tensor([[a_ref, [1.0, 2.0]], [a_ref, [0.0, 0.0]]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert full_token_kl(theta, ref, mask).item() == pytest.approx(0.75 * kl_a)
    assert torch.allclose(full_token_kl(theta, ref, mask, per_sequence=True), torch.tensor([kl_a / 2, kl_a]))
    # Cross-check against torch's KL on random logits, and no gradient into the frozen reference.
    a = torch.randn(2, 3, 5, generator=_gen(5), requires_grad=True)
    b = torch.randn(2, 3, 5, generator=_gen(6), requires_grad=True)
    per_token = F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    kl = full_token_kl(a, b, torch.ones(2, 3))
    assert kl.item() == pytest.approx(per_token.mean().item(), abs=1e-6)
    kl.backward()
    assert a.grad.abs().sum() > 0 and b.grad is None


def test_diffro_loss_by_hand_with_and_without_filtering():
    reward = torch.tensor([-2.0, -4.0, -1.0], requires_grad=True)
    kl = torch.tensor([0.5, 1.0, 0.0])
    # per sample −R + 0.1·KL = [2.05, 4.1, 1.0]
    assert diffro_loss(reward, kl, beta=0.1).item() == pytest.approx(7.15 / 3)
    keep = torch.tensor([True, False, True])  # e.g. advantage > 0
    loss = diffro_loss(reward, kl, beta=0.1, sample_weight=keep)
    assert loss.item() == pytest.approx((2.05 + 1.0) / 2)
    (grad,) = torch.autograd.grad(loss, reward)
    assert torch.allclose(grad, torch.tensor([-0.5, 0.0, -0.5]))  # −w/Σw: filtered sample gets none
    # scalar KL broadcasts: −mean_S(R) + β·KL
    scalar_kl = diffro_loss(reward, torch.tensor(0.3), beta=0.1, sample_weight=keep)
    assert scalar_kl.item() == pytest.approx(1.5 + 0.03)


def test_diffro_loss_with_no_selected_sample_is_a_differentiable_zero():
    reward = torch.tensor([-2.0, -4.0], requires_grad=True)
    loss = diffro_loss(reward, torch.tensor(0.7), sample_weight=torch.tensor([False, False]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(reward.grad, torch.zeros(2))


def test_reward_gradient_flows_through_relaxation_to_policy_logits():
    # Policy logits → Gumbel-Softmax → ỹ·E → a frozen linear "Token2Text" head → log P(text) → loss.
    policy_logits = torch.randn(2, 4, 6, generator=_gen(8), requires_grad=True)
    E = torch.randn(6, 3, generator=_gen(9))
    head = torch.randn(3, 5, generator=_gen(10))
    text = torch.tensor([[1, 2, 3, 4], [0, 0, 2, 2]])
    soft = gumbel_softmax_tokens(policy_logits, tau=1.0, generator=_gen(11))
    log_p = (soft_embed(soft, E) @ head).log_softmax(-1).gather(-1, text[..., None]).squeeze(-1)
    kl = full_token_kl(policy_logits, policy_logits.detach() + 0.1, torch.ones(2, 4), per_sequence=True)
    diffro_loss(log_p.sum(-1), kl, beta=0.1).backward()
    assert policy_logits.grad.abs().sum() > 0
