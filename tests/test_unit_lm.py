"""Unit LM (TWIST-style offset vocabulary) and next-unit pretraining, on tiny random Llamas."""

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechrl import checkpoint
from speechrl.models.unit_lm import UnitLM
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.trainers.lora import LoRAConfig, add_lora
from speechrl.trainers.unit_lm import corpus_sequences, mean_nll, pretrain_config, train_unit_lm

TEXT_VOCAB = 100


def tiny_lm(vocab: int = TEXT_VOCAB, seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def tiny_unit_lm(num_units: int = 20, seed: int = 0, tie: bool = False) -> UnitLM:
    return UnitLM.from_lm(tiny_lm(seed=seed, tie=tie), num_units, seed=seed)


def test_units_are_offset_into_the_text_vocabulary():
    m = tiny_unit_lm(20, tie=True)
    assert (m.offset, m.num_units, m.bos_id) == (TEXT_VOCAB, 20, TEXT_VOCAB + 20)
    assert m.lm.get_input_embeddings().num_embeddings == TEXT_VOCAB + 21
    assert m.encode([[0, 19], []]) == [[120, 100, 119], [120]]
    with pytest.raises(ValueError):
        m.encode([[20]])
    emb = m.lm.get_input_embeddings().weight.detach()
    text, units = emb[:TEXT_VOCAB], emb[TEXT_VOCAB:]
    assert torch.allclose(units.mean(0), text.mean(0), atol=3 * text.std(0).max() / 20 ** 0.5)
    assert units.std(0).mean() > 0.5 * text.std(0).mean()  # distinct rows, text-embedding scale


@pytest.mark.parametrize("tie", [True, False])
def test_word_tokens_start_from_the_text_embedding_of_their_word(tie):
    m = tiny_unit_lm(5, tie=tie)
    tokenizer = lambda text, add_special_tokens: type("E", (), {"input_ids": {" cat": [7], " sat": [3, 9]}[text]})
    m.init_from_text({0: "cat", 4: "sat"}, tokenizer)
    for layer in (m.lm.get_input_embeddings(), m.lm.get_output_embeddings()):
        w = layer.weight.detach()
        assert torch.equal(w[TEXT_VOCAB], w[7]) and torch.allclose(w[TEXT_VOCAB + 4], (w[3] + w[9]) / 2)
        assert not torch.equal(w[TEXT_VOCAB + 1], w[7])  # other units keep their own rows


def test_save_load_round_trip_merges_lora(tmp_path):
    m = tiny_unit_lm()
    add_lora(m, LoRAConfig(r=4, alpha=8))
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    seqs = [[1, 2, 3, 4], [5, 6], [7]]
    adapted = m.nll(seqs)
    m.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors", "unit_lm.json"} <= {f.name for f in tmp_path.iterdir()}
    assert json.loads((tmp_path / "config.json").read_text())["offset"] == TEXT_VOCAB
    loaded = UnitLM.from_pretrained(tmp_path)
    assert (loaded.offset, loaded.num_units, loaded.bos_id) == (m.offset, m.num_units, m.bos_id)
    assert not hasattr(loaded.lm, "disable_adapter")  # merged into plain weights
    for (a, na), (b, nb) in zip(adapted, loaded.nll(seqs)):
        assert a == pytest.approx(b, abs=1e-4) and na == nb


def test_twist_checkpoint_folder_loads_and_scores_units_like_masked_full_vocab(tmp_path):
    """A TWIST checkpoint: an HF causal LM whose config carries the unit offset, no speech BOS."""
    lm = tiny_lm(vocab=TEXT_VOCAB + 30)
    lm.config.offset = TEXT_VOCAB
    lm.save_pretrained(tmp_path)
    m = UnitLM.from_pretrained(tmp_path)
    assert (m.offset, m.num_units, m.bos_id) == (TEXT_VOCAB, 30, None)
    seq = [3, 29, 0, 7, 7, 12]
    (total, n), = m.nll([seq])
    assert n == len(seq) - 1  # the first unit is context only
    with torch.no_grad():  # by hand: full-vocabulary logits with the text rows masked out
        logits = lm(torch.tensor([[TEXT_VOCAB + u for u in seq]])).logits[0]
        logits[:, :TEXT_VOCAB] = float("-inf")
        logp = logits.log_softmax(-1)
        expected = -sum(logp[t, TEXT_VOCAB + seq[t + 1]].item() for t in range(len(seq) - 1))
    assert total == pytest.approx(expected, rel=1e-5)


def test_sequence_logps_scores_the_continuation_only():
    m = tiny_unit_lm()
    prompts, conts = [[1, 2, 3], [4]], [[5, 6], [7, 8, 9]]
    lp = m.sequence_logps(prompts, conts)
    assert lp.requires_grad and lp.shape == (2,)
    full = m.nll([p + c for p, c in zip(prompts, conts)])
    head = m.nll(prompts)
    for i in range(2):  # chain rule: log p(c | p) = log p(p + c) − log p(p)
        assert lp[i].item() == pytest.approx(-(full[i][0] - head[i][0]), abs=1e-4)


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_and_shared_prompts_give_each_sequence_its_own_log_probs(bos, attn):
    """Both padding-free layouts change what is computed, never a log-prob: packed pretraining rows (the
    loss of 11 sequences of 1–30 units in rows of 40 tokens) and DPO's chosen/rejected pairs sharing a
    prompt (each continuation as if scored alone), gradients included, with or without a BOS (no BOS: a
    sequence's first unit, or an empty prompt's first continuation unit, is context)."""
    import random

    m = tiny_unit_lm()
    m.hf.config._attn_implementation = attn
    if not bos:
        m.bos_id = None
    rng = random.Random(1)
    seqs = [[rng.randrange(20) for _ in range(rng.randint(1, 30))] for _ in range(11)]
    ids, pos, score = m.pack_rows(seqs, 40)
    assert ids.shape[1] == 40 and ids.numel() < len(seqs) * max(map(len, seqs))  # fewer tokens than padded
    assert score.sum() == sum(len(s) - (not bos) for s in seqs)
    packed, mask = m.token_logps(ids, None, score, position_ids=pos)
    padded, pmask = m.token_logps(*m.pack([[] for _ in seqs], seqs))
    assert (packed * mask).sum().item() == pytest.approx((padded * pmask).sum().item(), abs=1e-3)

    prompts = [[]] + [[rng.randrange(20) for _ in range(rng.randint(1, 9))] for _ in range(4)]
    branches = [[[rng.randrange(20) for _ in range(rng.randint(1, 7))] for _ in range(2)] for _ in range(5)]
    shared = m.branch_logps(prompts, branches)
    alone = torch.stack([m.sequence_logps(prompts, [b[j] for b in branches]) for j in range(2)], 1)
    assert torch.allclose(shared, alone, atol=1e-5)
    grads = []
    for value in (shared, alone):
        m.zero_grad()
        (value[:, 0] - 2 * value[:, 1]).sum().backward(inputs=[m.hf.model.layers[0].mlp.up_proj.weight])
        grads.append(m.hf.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert torch.allclose(*grads, atol=1e-5)


def test_generate_samples_units_only_seeded_and_matches_teacher_forcing():
    m = tiny_unit_lm(20)
    with torch.no_grad():  # make every text token far likelier than any unit under the full vocabulary
        m.lm.get_output_embeddings().weight[:TEXT_VOCAB] *= 1000
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    out = m.generate(prompts, n=4, max_new_tokens=12, temperature=1.5, top_k=0, seed=3)
    assert [len(o) for o in out] == [4, 4, 4] and all(len(s) == 12 for o in out for s in o)
    assert all(0 <= u < 20 for o in out for s in o for u in s)
    assert out == m.generate(prompts, n=4, max_new_tokens=12, temperature=1.5, top_k=0, seed=3)
    assert out != m.generate(prompts, n=4, max_new_tokens=12, temperature=1.5, top_k=0, seed=4)
    # greedy decoding with a left-padded batch and a KV cache == step-by-step teacher-forced argmax
    greedy = m.generate(prompts, n=1, max_new_tokens=6, top_k=1, batch_size=3)
    for p, (g,) in zip(prompts, greedy):
        seq = list(p)
        for _ in range(6):
            ids, attn, _ = m.pack([seq], [[]])
            seq.append(int(m(ids, attn)[0, -1].argmax()))
        assert g == seq[len(p):]


def pretrain(out, train, dev, **kw):
    cfg = pretrain_config(**{"lr": 3e-3, "batch_size": 8, "max_steps": 12, "max_tokens": 64, "warmup_steps": 0,
                             "eval_every": 6, "checkpoint_every": 4, **kw})
    m = UnitLM.from_lm(tiny_lm(seed=1, tie=True), 190, seed=1)  # the hama phoneme vocabulary
    return m, train_unit_lm(m, train, dev, cfg, out, MetricsLogger(out, tensorboard=False))


def losses(out):
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_pretraining_on_real_units_learns_and_resumes(unit_features, tmp_path):
    rows, feats = unit_features
    train = corpus_sequences(feats, [r["id"] for r in rows if r["split"] == "train"])
    dev = corpus_sequences(feats, [r["id"] for r in rows if r["split"] != "train"])
    assert train and dev and all(a != b for s in train for a, b in zip(s, s[1:]))  # deduplicated
    m, result = pretrain(tmp_path / "a", train, dev, max_steps=30, eval_every=10)
    assert -result["best_score"] < -result["start_score"] - 1.0  # dev NLL from ≈ log(190) = 5.2 nats
    assert mean_nll(m, dev) == pytest.approx(-result["best_score"], abs=1e-5)  # best weights restored
    assert [p.name for p in checkpoint.complete(tmp_path / "a")] == ["step-0000024", "step-0000028"]
    # resume: a run rolled back to its step-8 checkpoint reproduces the uninterrupted losses
    pretrain(tmp_path / "b", train, dev)
    b = tmp_path / "b"
    full = losses(b)
    shutil.rmtree(b / "checkpoints" / "step-0000012")
    (b / "result.json").unlink()
    (b / "metrics.jsonl").write_text("")
    _, again = pretrain(b, train, dev)
    assert losses(b) == pytest.approx(full[8:], abs=1e-6) and again["steps"] == 12
    cached_model, cached = pretrain(b, train, dev)  # finished: result.json is reused, best weights loaded
    assert cached == again and mean_nll(cached_model, dev) == pytest.approx(-again["best_score"], abs=1e-5)


def test_time_budget_stops_and_the_last_weights_compete(tmp_path):
    """The continued-training control: stop on wall time; the stopping point is evaluated too."""
    seqs = [[i % 7, (i + 1) % 7, (i + 2) % 7] * 4 for i in range(32)]
    m, result = pretrain(tmp_path, seqs, seqs[:8], max_steps=50, eval_every=100, time_budget_s=1e-9)
    assert result["steps"] == 1 and result["best_step"] == 1  # one step, evaluated, better than step 0
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "dev_nll" in r] == [0, 1]
