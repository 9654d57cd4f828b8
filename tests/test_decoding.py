"""The one sampler and the one KV-cached decode loop (speechrl.models.decoding) on hand-made logits and a
tiny random Llama: filtering keeps what it should, seeded draws repeat, draws follow the tempered and
filtered probabilities (chi-square), the cached loop equals step-by-step decoding without a cache, EOS
ends rows."""

import pytest
import torch
from scipy.stats import chi2
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


def _draw_counts(logits: torch.Tensor, n: int, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """How often each token of ``logits`` [V] is drawn in n draws (seeded; batches of 500 rows: 20,000 rows
    of a 51,864-token vocabulary at once would hold ~12 GB of float64 cumulative sums)."""
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_next(logits.expand(min(500, n - i), -1), temperature, top_k, top_p, generator)
                       for i in range(0, n, 500)])
    return torch.bincount(draws, minlength=logits.shape[0]).double()


def _chi_square_holds(counts: torch.Tensor, probs: torch.Tensor) -> bool:
    """Pearson's test of counts against probs at the 0.1 % level (tokens of probability 0: never drawn)."""
    kept = probs > 0
    if counts[~kept].sum() > 0:
        return False
    expected = counts.sum() * probs[kept]
    stat = float(((counts[kept] - expected) ** 2 / expected).sum())
    return stat < chi2.ppf(0.999, int(kept.sum()) - 1)


@pytest.mark.parametrize("temperature, top_k, top_p, expected", [
    (1.0, 0, 1.0, [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]),
    (0.5, 0, 1.0, None),  # softmax(log p / 0.5) ∝ p²
    (1.0, 3, 1.0, [0.4 / 0.8, 0.25 / 0.8, 0.15 / 0.8, 0, 0, 0]),
    (1.0, 0, 0.6, [0.4 / 0.65, 0.25 / 0.65, 0, 0, 0, 0]),  # 0.4 < 0.6 ≤ 0.65
    (2.0, 2, 1.0, None),  # ∝ √p on the top 2
])
def test_draws_follow_the_tempered_filtered_probabilities(temperature, top_k, top_p, expected):
    p = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    if expected is None:
        q = p ** (1 / temperature)
        if top_k:
            q[top_k:] = 0
        expected = (q / q.sum()).tolist()
    counts = _draw_counts(p.log().float(), 20000, temperature, top_k, top_p)
    assert _chi_square_holds(counts, torch.tensor(expected, dtype=torch.float64)), counts.tolist()
    wrong = torch.tensor(expected, dtype=torch.float64).roll(1)  # the test has teeth
    assert not _chi_square_holds(counts, wrong / wrong.sum())


def test_draws_reach_the_tail_of_a_whisper_sized_vocabulary():
    """51,864 tokens: the last one (30 %) and a spread of 1,000 rare ones (30 % together) are drawn at
    their rates; tokens of probability 0 (−∞ logits) never are."""
    v = 51864
    probs = torch.zeros(v, dtype=torch.float64)
    probs[0], probs[-1], probs[v // 2] = 0.3, 0.3, 0.1
    probs[100:50100:50] = 0.3 / 1000
    logits = probs.log().float()
    counts = _draw_counts(logits, 20000, 1.0, 0, 1.0)
    groups = lambda x: torch.stack([x[0], x[-1], x[v // 2], x[100:50100:50].sum()])  # noqa: E731
    assert counts[probs == 0].sum() == 0
    assert _chi_square_holds(groups(counts), groups(probs))


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
