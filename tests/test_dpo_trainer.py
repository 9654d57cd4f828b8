"""LoRA-DPO on a tiny random unit LM: learning a preference, the loss by hand, resume, next round."""

import copy
import dataclasses
import random
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from speechrl import checkpoint
from speechrl.models.unit_lm import UnitLM
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.trainers.common import batch_indices
from speechrl.trainers.dpo import DPOConfig, evaluate_pairs, pair_logps, reference_logps, train_dpo
from speechrl.trainers.lora import LoRAConfig, add_lora

K = 16  # units


def tiny_unit_lm() -> UnitLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return UnitLM.from_lm(LlamaForCausalLM(cfg), K, seed=0)


def make_pairs(n: int, seed: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Chosen continuations count up from the prompt's last unit; rejected ones are random."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = [rng.randrange(K) for _ in range(rng.randint(3, 6))]
        chosen = [(prompt[-1] + 1 + i) % K for i in range(6)]
        rejected = [rng.randrange(K) for _ in range(6)]
        pairs.append((prompt, chosen, rejected))
    return pairs


TRAIN, DEV, TEST = make_pairs(128, 1), make_pairs(24, 2), make_pairs(64, 3)


def cfg(**kw) -> DPOConfig:
    return DPOConfig(**{"lr": 1e-2, "batch_size": 16, "max_steps": 6, "eval_every": 3, "checkpoint_every": 2,
                        "lora": LoRAConfig(r=8, alpha=16), **kw})


def run(out, model=None, **kw):
    model = model or tiny_unit_lm()
    return model, train_dpo(model, TRAIN, DEV, cfg(**kw), out, MetricsLogger(out, tensorboard=False))


def step_losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "step_s" in r]


def test_dpo_learns_the_preference_and_keeps_the_reference_frozen(tmp_path):
    model = tiny_unit_lm()
    base = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
    model, result = run(tmp_path, model, max_steps=24, eval_every=8, checkpoint_every=8)
    held_out = evaluate_pairs(model, TEST, DPOConfig())
    assert held_out["reward_accuracy"] > 0.9 and held_out["margin"] > 0
    pol_c, _ = pair_logps(model, TEST)
    ref_c, _ = reference_logps(model, None, TEST)
    assert (pol_c - ref_c).mean() > 1.0  # chosen-style continuations became likelier than under the reference
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in model.lm.named_parameters() if "lora_" not in n}
    assert all(torch.equal(frozen[n].cpu(), base[n].cpu()) for n in base)  # the reference is untouched
    best = load_file(str(tmp_path / "best" / "model.safetensors"))
    assert best and all("lora_" in k for k in best)
    dev_rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "dev_reward_accuracy" in r]
    assert [r["step"] for r in dev_rows] == [0, 8, 16, 24] and dev_rows[0]["dev_reward_accuracy"] == 0.0
    assert result["best_reward_accuracy"] == max(r["dev_reward_accuracy"] for r in dev_rows) > 0.9
    train_rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "step_s" in r]
    assert {"loss", "reward_accuracy", "margin", "chosen_reward", "rejected_reward", "lr"} <= set(train_rows[0])
    # finished: a second call reuses result.json and loads the best adapter into a fresh model
    again_model, again = run(tmp_path)
    assert again == result
    assert evaluate_pairs(again_model, TEST, DPOConfig()) == pytest.approx(held_out, abs=1e-5)


def by_hand_logps(model: UnitLM, prompt, completion) -> torch.Tensor:
    """Σ log p(completion unit | prefix) from the full-vocabulary logits with text rows masked out."""
    ids = [model.bos_id] + [model.offset + u for u in prompt + completion]
    logits = model.hf(torch.tensor([ids])).logits[0].clone()
    logits[:, : model.offset] = float("-inf")
    logits[:, model.offset + model.num_units:] = float("-inf")  # the BOS row is never a target
    logp = logits.log_softmax(-1)
    start = 1 + len(prompt)
    return sum(logp[t - 1, ids[t]] for t in range(start, len(ids)))


def test_first_step_loss_equals_dpo_loss_by_hand(tmp_path):
    """On a model that already carries an adapter (a later curriculum round), the policy and the
    adapter-off reference differ at step 0, so the first logged loss is a real check; gradient
    accumulation over micro-batches gives the same loss and the same update. With the chosen-NLL term
    (α = 0.3) as well."""
    model = tiny_unit_lm()
    add_lora(model, LoRAConfig(r=8, alpha=16))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    twin = copy.deepcopy(model)
    c = cfg(max_steps=1, beta=0.5, label_smoothing=0.1, nll_weight=0.3)
    batch = [TRAIN[i] for i in batch_indices(0, len(TRAIN), c.batch_size, c.seed)]
    with torch.no_grad():
        terms = []
        for prompt, chosen, rejected in batch:
            pc, pr = by_hand_logps(model, prompt, chosen), by_hand_logps(model, prompt, rejected)
            with model.lm.disable_adapter():
                rc, rr = by_hand_logps(model, prompt, chosen), by_hand_logps(model, prompt, rejected)
            z = c.beta * ((pc - rc) - (pr - rr))
            terms.append(-(1 - c.label_smoothing) * F.logsigmoid(z) - c.label_smoothing * F.logsigmoid(-z)
                         - c.nll_weight * pc / len(chosen))  # RPO: the chosen side's per-unit NLL
        expected = torch.stack(terms).mean().item()
    assert expected != pytest.approx(0.6931, abs=1e-2)  # not the trivial policy == reference value
    train_dpo(model, TRAIN, [], c, tmp_path / "full", MetricsLogger(tmp_path / "full", tensorboard=False))
    assert step_losses(tmp_path / "full") == pytest.approx([expected], rel=1e-5)
    assert sum(n.count("lora_A") for n, _ in model.named_parameters()) == 14  # no second adapter added
    micro = dataclasses.replace(c, micro_batch_size=4)
    train_dpo(twin, TRAIN, [], micro, tmp_path / "micro", MetricsLogger(tmp_path / "micro", tensorboard=False))
    assert step_losses(tmp_path / "micro") == pytest.approx([expected], rel=1e-5)
    updated = dict(model.named_parameters())
    assert all(torch.allclose(p, updated[n], atol=1e-6) for n, p in twin.named_parameters() if "lora_" in n)


def test_dpo_resume_reproduces_uninterrupted_losses(tmp_path):
    run(tmp_path / "a")
    run(tmp_path / "b")
    b = tmp_path / "b"
    shutil.rmtree(b / "checkpoints" / "step-0000006")  # as if it died after its step-4 checkpoint
    (b / "result.json").unlink()
    (b / "metrics.jsonl").write_text("")
    _, result = run(b)
    assert step_losses(b) == pytest.approx(step_losses(tmp_path / "a")[4:], abs=1e-6)
    assert result["steps"] == 6 and [p.name for p in checkpoint.complete(b)] == ["step-0000004", "step-0000006"]


def test_next_round_continues_the_adapter_against_the_frozen_base(tmp_path):
    model, first = run(tmp_path / "round1", max_steps=6)
    lora_after_round1 = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    _, second = run(tmp_path / "round2", model, max_steps=3, eval_every=3)
    start = [r for r in read_metrics(tmp_path / "round2" / "metrics.jsonl") if r.get("step") == 0][0]
    # round 2 starts from round 1's best adapter, still measured against the adapter-off base
    assert start["dev_reward_accuracy"] == pytest.approx(first["best_reward_accuracy"])
    assert set(lora_after_round1) == {n for n, _ in model.named_parameters() if "lora_" in n}
    assert second["best_reward_accuracy"] >= first["best_reward_accuracy"]


def test_select_loss_keeps_the_lowest_dev_loss_checkpoint(tmp_path):
    """`select: loss`: the checkpoint of the lowest dev loss wins, whatever its reward accuracy (which
    ranks first under the default `select: reward_accuracy`)."""
    for select in ("loss", "reward_accuracy"):
        out = tmp_path / select
        _, result = run(out, max_steps=12, eval_every=3, lr=3e-2, select=select)
        dev = [r for r in read_metrics(out / "metrics.jsonl") if "dev_reward_accuracy" in r]
        if select == "loss":
            best = min(dev, key=lambda r: r["dev_loss"])
        else:
            best = max(dev, key=lambda r: (r["dev_reward_accuracy"], -r["dev_loss"]))
        assert result["best_step"] == best["step"] and result["best_dev_loss"] == best["dev_loss"]
    assert (tmp_path / "loss" / "best" / "model.safetensors").is_file()
