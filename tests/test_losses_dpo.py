"""DPO loss and sequence log-probs: hand-computed values, then parity with TRL 1.16's
``DPOTrainer._compute_loss`` run on two tiny real causal LMs."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from speechrl.losses import dpo_loss, dpo_metrics, sequence_logps, shift_for_causal_lm, token_logps

# TRL's disable_gradient_checkpointing reads a property transformers 5 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def test_token_logps_by_hand():
    # logits [0, ln 3] → probs [1/4, 3/4]; label −100 (ignored) → 0.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)], [5.0, 1.0]]])
    out = token_logps(logits, torch.tensor([[1, 0, -100]]))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[math.log(0.75), math.log(0.25), 0.0]]))


def test_token_logps_matches_log_softmax_gather_and_upcasts_bf16():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 7, generator=gen)
    labels = torch.randint(0, 7, (3, 4), generator=gen)
    expected = logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1)
    assert torch.allclose(token_logps(logits, labels), expected, atol=1e-6)
    bf16 = token_logps(logits.bfloat16(), labels)
    assert bf16.dtype == torch.float32 and torch.allclose(bf16, expected, atol=5e-2)


def test_shift_and_sequence_logps_by_hand():
    # Row = [prompt, c1, c2]; logits[:, t] predicts input_ids[:, t+1]. Uniform logits over V = 4:
    # each scored token has log(1/4). Row 0 scores c1, c2 → 2·log(1/4); row 1 has c2 padded → log(1/4).
    input_ids = torch.tensor([[3, 1, 2], [3, 1, 0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    logits = torch.zeros(2, 3, 4)
    logits[:, -1] = 100.0  # the last position predicts nothing and must be dropped by the shift
    aligned = shift_for_causal_lm(logits, input_ids, mask)
    assert [tuple(x.shape) for x in aligned] == [(2, 2, 4), (2, 2), (2, 2)]
    assert torch.allclose(sequence_logps(*aligned), torch.tensor([2 * math.log(0.25), math.log(0.25)]))


def test_dpo_loss_by_hand():
    # chosen log-ratio −1 − (−1.5) = 0.5, rejected −2 − (−1.5) = −0.5 → Δ = 1, βΔ = 0.1.
    args = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])
    loss, chosen, rejected = dpo_loss(*args, beta=0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.1)))  # −log σ(0.1)
    assert chosen.item() == pytest.approx(0.05) and rejected.item() == pytest.approx(-0.05)
    # cDPO, ε = 0.2: −0.8·log σ(0.1) − 0.2·log σ(−0.1)
    smoothed, _, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.2)
    expected = 0.8 * math.log1p(math.exp(-0.1)) + 0.2 * math.log1p(math.exp(0.1))
    assert smoothed.item() == pytest.approx(expected)
    # RPO, α = 0.5, |y_w| = 4: + 0.5 · (1.0 / 4) on top of −log σ(0.1)
    rpo, _, _ = dpo_loss(*args, beta=0.1, nll_weight=0.5, chosen_tokens=torch.tensor([4]))
    assert rpo.item() == pytest.approx(math.log1p(math.exp(-0.1)) + 0.125)
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(*args, beta=0.1, nll_weight=0.5)


def test_dpo_gradient_and_detached_rewards():
    # ∂L/∂πc = −β·σ(−βΔ) = −0.1·σ(−0.1); ∂L/∂πr = +β·σ(−βΔ); rewards carry no graph.
    pc, pr = torch.tensor([-1.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    loss, chosen, rejected = dpo_loss(pc, pr, torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.1)
    loss.backward()
    g = 0.1 / (1 + math.exp(0.1))
    assert pc.grad.item() == pytest.approx(-g) and pr.grad.item() == pytest.approx(g)
    assert not chosen.requires_grad and not rejected.requires_grad


def test_dpo_metrics_by_hand():
    m = dpo_metrics(torch.tensor([0.3, -0.1, 0.2]), torch.tensor([0.1, 0.2, 0.2]))
    assert m["reward_accuracy"].item() == pytest.approx(1 / 3)  # the tie counts 0
    assert m["margin"].item() == pytest.approx((0.2 - 0.3 + 0.0) / 3)


# ---------------------------------------------------------------------------------------------------
# Parity with TRL 1.16
# ---------------------------------------------------------------------------------------------------

def _tiny_lm(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(config).float()


def _trl_dpo_loss(policy, ref, inputs, *, beta, loss_type="sigmoid", label_smoothing=0.0, loss_weights=(1.0,)):
    """Run TRL's own ``DPOTrainer._compute_loss``.

    The trainer is not constructed (its __init__ tokenizes datasets and builds accelerate state); the
    unbound method gets a ``SimpleNamespace`` self with the attributes it reads. The models are real:
    ``add_fused_lm_head`` patches them exactly as ``DPOTrainer.__init__`` does, so TRL scores the
    completion tokens with its own kernel and shift convention. No PEFT, reference model not precomputed.
    """
    from trl.trainer.dpo_trainer import DPOTrainer

    identity = lambda x: x  # noqa: E731
    fake = SimpleNamespace(
        model=policy, ref_model=ref, precompute_ref_logps=False, aux_loss_enabled=False,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None), f_divergence_type="reverse_kl",
        loss_types=[loss_type] if isinstance(loss_type, str) else list(loss_type), loss_weights=list(loss_weights),
        beta=beta, label_smoothing=label_smoothing,
        ld_alpha=None, use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1,
    )
    loss = DPOTrainer._compute_loss(fake, policy, inputs, return_outputs=False)
    return loss, fake._metrics["train"]


def _our_dpo_loss(policy, ref, inputs, *, beta, label_smoothing=0.0, nll_weight=0.0):
    ids, attn, mask = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
    logps = sequence_logps(*shift_for_causal_lm(policy(input_ids=ids, attention_mask=attn).logits, ids, mask))
    with torch.no_grad():
        ref_logits = ref(input_ids=ids, attention_mask=attn).logits
    ref_logps = sequence_logps(*shift_for_causal_lm(ref_logits, ids, mask))
    (pc, pr), (rc, rr) = logps.chunk(2), ref_logps.chunk(2)
    chosen_tokens = mask.chunk(2)[0][:, 1:].sum(1)
    return dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing, nll_weight=nll_weight,
                    chosen_tokens=chosen_tokens)


@pytest.fixture(scope="module")
def tiny_pair():
    from trl.trainer.utils import add_fused_lm_head

    policy, ref = _tiny_lm(0), _tiny_lm(1)
    add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))  # as DPOTrainer
    add_fused_lm_head(ref)
    ref.eval()
    # Rows [chosen_0, chosen_1, rejected_0, rejected_1]: prompt 2–3 tokens, completion, right padding.
    inputs = {
        "input_ids": torch.tensor([[1, 2, 5, 6, 7, 0], [1, 2, 3, 9, 4, 8],
                                   [1, 2, 11, 12, 0, 0], [1, 2, 3, 13, 14, 15]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 1, 0, 0], [1] * 6]),
        "completion_mask": torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1],
                                         [0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]]),
    }
    return policy, ref, inputs


def test_parity_with_trl_sigmoid_dpo(tiny_pair):
    policy, ref, inputs = tiny_pair
    policy.zero_grad()
    theirs, metrics = _trl_dpo_loss(policy, ref, inputs, beta=0.5)
    theirs.backward()
    trl_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    ours, chosen, rejected = _our_dpo_loss(policy, ref, inputs, beta=0.5)
    ours.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for ours_g, trl_g in zip((p.grad for p in policy.parameters()), trl_grads):
        assert torch.allclose(ours_g, trl_g, atol=1e-5)
    ours_m = dpo_metrics(chosen, rejected)
    assert ours_m["reward_accuracy"].item() == pytest.approx(metrics["rewards/accuracies"][0])
    assert ours_m["margin"].item() == pytest.approx(metrics["rewards/margins"][0], abs=1e-6)
    assert chosen.mean().item() == pytest.approx(metrics["rewards/chosen"][0], abs=1e-6)


def test_parity_label_smoothing_with_trl_aot_on_single_pairs(tiny_pair):
    """TRL 1.16's "sigmoid" ignores ``label_smoothing``; its "aot" loss sorts the log-ratios over the
    batch and then applies −(1−ε)·log σ(β·d) − ε·log σ(−β·d), which on a one-pair batch is cDPO."""
    policy, ref, inputs = tiny_pair
    single = {k: v[[1, 3]] for k, v in inputs.items()}  # pair 1: chosen row 1, rejected row 3
    theirs, _ = _trl_dpo_loss(policy, ref, single, beta=0.5, loss_type="aot", label_smoothing=0.2)
    ours, _, _ = _our_dpo_loss(policy, ref, single, beta=0.5, label_smoothing=0.2)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_parity_chosen_nll_with_trl_sigmoid_plus_sft_on_single_pairs(tiny_pair):
    """RPO: TRL 1.16 writes it as ``loss_type=["sigmoid", "sft"]`` with weights [1, α]; its SFT term
    is the token mean over the batch's chosen tokens, ours the per-pair mean — equal on one pair."""
    policy, ref, inputs = tiny_pair
    single = {k: v[[1, 3]] for k, v in inputs.items()}
    policy.zero_grad()
    theirs, _ = _trl_dpo_loss(policy, ref, single, beta=0.5, loss_type=("sigmoid", "sft"), loss_weights=(1.0, 0.7))
    theirs.backward()
    trl_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    ours, _, _ = _our_dpo_loss(policy, ref, single, beta=0.5, nll_weight=0.7)
    ours.backward()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    plain, _, _ = _our_dpo_loss(policy, ref, single, beta=0.5)
    assert abs(ours.item() - plain.item()) > 0.1  # the NLL term is there
    for ours_g, trl_g in zip((p.grad for p in policy.parameters()), trl_grads):
        assert torch.allclose(ours_g, trl_g, atol=1e-5)
    policy.zero_grad()
