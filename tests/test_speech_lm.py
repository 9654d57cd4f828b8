"""SpeechLM on a tiny random Llama with the real SmolLM2 tokenizer and real hama units."""

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechrl.models.frontends import UnitFrontEnd
from speechrl.models.hub import load_tokenizer
from speechrl.models.policy import PromptBatch, completion_mask, decode
from speechrl.models.speech_lm import SpeechLM, truncate_layers


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    tok = load_tokenizer("smollm2-135m")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    lm = LlamaForCausalLM(cfg)
    return SpeechLM(lm, tok, UnitFrontEnd(64, dim=32), {"kind": "units", "dim": 32})


def unit_feats(n, seed):
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, 189, n), "durations": rng.integers(1, 10, n)}


def batch():
    return PromptBatch([unit_feats(7, 0), unit_feats(15, 1), unit_feats(3, 2)],
                       ["Transcribe the audio.", "Answer: where did Jack walk?", "Translate into Spanish."])


def test_teacher_forced_logps_match_generation_scores(model):
    enc = model.encode(batch())
    out = model.lm.generate(inputs_embeds=enc["embeds"], attention_mask=enc["mask"], max_new_tokens=6,
                            do_sample=False, output_scores=True, return_dict_in_generate=True,
                            pad_token_id=model.pad_token_id, eos_token_id=model.eos_token_id)
    ids = out.sequences[:, -6:]
    mask = completion_mask(ids, model.eos_token_id)
    gen_logps = torch.stack([torch.log_softmax(s, -1) for s in out.scores], 1).gather(2, ids[..., None])[..., 0]
    with torch.no_grad():
        tf_logps = model.completion_logps(enc, ids, mask)
    assert torch.allclose(tf_logps * mask, gen_logps * mask, atol=1e-4)


def test_audio_features_reach_the_forward_pass(model):
    """The failure other toolkits have: audio silently dropped. Different audio → different logps,
    and the loss has a gradient on the front end."""
    b = batch()
    ids = torch.randint(100, 1000, (3, 5))
    mask = torch.ones(3, 5)
    lp = model.completion_logps(model.encode(b), ids, mask)
    other = PromptBatch([unit_feats(7, 9), unit_feats(15, 8), unit_feats(3, 7)], b.text)
    with torch.no_grad():
        lp2 = model.completion_logps(model.encode(other), ids, mask)
    assert not torch.allclose(lp.detach(), lp2)
    (-lp.sum()).backward()
    grads = [p.grad for p in model.front_end.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_repeat_encodes_once(model):
    enc = model.encode(batch())
    rep = enc.repeat(4)
    assert rep["embeds"].shape[0] == 12 and torch.equal(rep["embeds"][4], enc["embeds"][1])


def test_generate_and_decode(model):
    enc = model.encode(batch()).repeat(2)
    ids = model.generate(enc, max_new_tokens=5, do_sample=True, temperature=1.0, top_p=0.9)
    assert ids.shape == (6, 5)
    texts = decode(model.tokenizer, ids, completion_mask(ids, model.eos_token_id))
    assert len(texts) == 6 and all(isinstance(t, str) for t in texts)


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "lm" / "model.safetensors").is_file()
    loaded = SpeechLM.from_pretrained(tmp_path / "m")
    ids, mask = torch.randint(100, 1000, (3, 4)), torch.ones(3, 4)
    with torch.no_grad():
        a = model.completion_logps(model.encode(batch()), ids, mask)
        b = loaded.completion_logps(loaded.encode(batch()), ids, mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_truncate_layers():
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    lm = truncate_layers(LlamaForCausalLM(cfg), 2)
    assert len(lm.model.layers) == 2 and lm.config.num_hidden_layers == 2
    lm(torch.randint(0, 100, (1, 5)))


def test_save_with_lora_merges_a_copy(tmp_path):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_policy

    policy = make_tiny_policy()
    policy.lm = get_peft_model(policy.lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    policy.save_pretrained(tmp_path / "m")
    assert hasattr(policy.lm, "disable_adapter")  # still training with its adapter
    loaded = SpeechLM.from_pretrained(tmp_path / "m")
    ids, mask = torch.randint(100, 1000, (3, 4)), torch.ones(3, 4)
    with torch.no_grad():
        a = policy.completion_logps(policy.encode(batch()), ids, mask)
        b = loaded.completion_logps(loaded.encode(batch()), ids, mask)
    assert torch.allclose(a, b, atol=1e-4)


def test_prompt_without_audio_units_is_a_text_prompt(model):
    """Zero units (a text-only prompt) gives finite log-probs and gradients (no fully masked row)."""
    b = PromptBatch([{"ids": np.zeros(0, np.int64), "durations": np.zeros(0, np.int64)}, unit_feats(4, 0)],
                    ["Say hello.", "Transcribe the audio."])
    model = SpeechLM(model.lm, model.tokenizer, UnitFrontEnd(64, dim=32, layers=2), {"kind": "units", "dim": 32})
    enc = model.encode(b)
    assert int(enc["mask"][0].sum()) < int(enc["mask"][1].sum())
    lp = model.completion_logps(enc, torch.randint(100, 1000, (2, 3)), torch.ones(2, 3))
    lp.sum().backward()
    assert torch.isfinite(lp).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()
