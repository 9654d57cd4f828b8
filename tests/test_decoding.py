"""The one sampler and the one KV-cached decode loop (speechrl.models.decoding) on hand-made logits and a
tiny random Llama: filtering keeps what it should, seeded draws repeat, the cached loop equals
step-by-step decoding without a cache, EOS ends rows."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from speechrl.models.decoding import decode_cached, filter_logits, sample_next


def test_top_k_and_nucleus_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, 2, 1.0)) == [True, True, False, False]
    assert kept(filter_logits(logits, 0, 0.7)) == [True, True, False, False]  # 0.5 < 0.7 ≤ 0.8
    assert kept(filter_logits(logits, 0, 0.4)) == [True, False, False, False]
    assert kept(filter_logits(logits, 0, 1.0)) == [True] * 4 and kept(filter_logits(logits, 4, 1.0)) == [True] * 4


def test_sampler_is_greedy_at_zero_temperature_and_seeded_otherwise():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits, 0.0), logits.argmax(-1))
    draw = lambda seed: sample_next(logits, 1.0, 3, 0.9, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    top3 = logits.topk(3, dim=-1).indices
    assert (draw(1)[:, None] == top3).any(-1).all()  # never outside the top 3


def _tiny_lm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def _step(lm):
    def step(ids, mask, positions, cache):
        return lm(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True).logits[:, -1]
    return step


def test_cached_decoding_equals_uncached_greedy_and_eos_ends_rows():
    lm = _tiny_lm()
    prompts = torch.tensor([[0, 5, 6, 7], [3, 4, 8, 9]])  # row 0 left-padded by one
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    greedy = lambda logits, _t: logits.argmax(-1)  # noqa: E731
    out = decode_cached(_step(lm), prompts, mask, lambda t: t[:, None], greedy, 6)
    assert out.shape == (2, 6)
    for row, (p, m) in enumerate(zip(prompts, mask)):
        seq = p[m.bool()].tolist()
        for _ in range(6):
            seq.append(int(lm(torch.tensor([seq])).logits[0, -1].argmax()))
        assert out[row].tolist() == seq[-6:]
    eos = int(out[0, 1])  # row 0 "ends" at its second token: EOS after, until every row has ended
    ended = decode_cached(_step(lm), prompts, mask, lambda t: t[:, None], greedy, 6, eos_id=eos)
    assert ended[0, 1:].tolist() == [eos] * (ended.shape[1] - 1)
    assert decode_cached(_step(lm), prompts, mask, lambda t: t[:, None], greedy, 0).shape == (2, 0)
