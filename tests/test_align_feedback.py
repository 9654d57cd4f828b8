"""speechrl.align.feedback and speechrl.align.pairs: auto-BLEU by hand, continuation perplexity under
SmolLM2-135M (loaded once for the module), and preference-pair selection, ties and drops."""

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from speechrl.align.feedback import auto_bleu, continuation_nll, continuation_perplexity
from speechrl.align.pairs import (Candidate, PromptCandidates, build_judge_pairs, build_ppl_pairs, context_pairs,
                                  load_candidates, load_pairs, save_candidates, save_pairs, score_quantiles)


# -- auto-BLEU ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, n, expected", [
    ("the cat sat on the cat", 2, 2 / 5),             # the·cat twice among 5 bigrams
    ("a b a b a b", 2, 1.0),                          # a·b ×3, b·a ×2: every bigram repeats
    ("Anna walked to the market on Monday.", 2, 0.0),  # no repeats
    ("The cat. the CAT!", 2, 2 / 3),                  # normalised: the·cat ×2 of 3 bigrams
    ("go go go", 2, 1.0),                             # overlapping occurrences count
    ("the cat sat on the mat", 1, 2 / 6),             # unigrams: "the" twice
    ("she ate three apples and three pears", 2, 0.0),
    ("one two three one two three", 3, 2 / 4),        # trigram one·two·three twice of 4
    ("word", 2, 0.0),                                 # no bigram
    ("two words", 2, 0.0),                            # one bigram cannot repeat
    ("", 2, 0.0),
])
def test_auto_bleu_hand_computed(text, n, expected):
    assert auto_bleu(text, n) == pytest.approx(expected)


def test_auto_bleu_threshold_and_errors():
    # one repeated bigram in a 12-word sentence is already above Align-SLM's δ = 0.1
    assert auto_bleu("then she went home and then she went to the park again") == pytest.approx(4 / 11)
    with pytest.raises(ValueError):
        auto_bleu("a b c", n=0)
    with pytest.raises(TypeError):
        auto_bleu(None)


# -- continuation perplexity ----------------------------------------------------------------------

def test_perplexity_is_over_continuation_tokens_only(smollm2):
    model, tok = smollm2
    prompt, cont = "Anna walked to the market on Monday morning.", "She bought three red apples."
    (total, n), = continuation_nll(model, tok, [prompt], [cont])
    ctx = tok.encode(prompt, add_special_tokens=False)
    ids = tok.encode(" " + cont, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ctx + ids])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[len(ctx) - 1:-1], torch.tensor(ids), reduction="sum")
    assert n == len(ids)
    assert total == pytest.approx(expected.item(), rel=1e-4)
    ppl = continuation_perplexity(model, tok, [prompt], [cont])[0]
    assert ppl == pytest.approx(math.exp(expected.item() / n), rel=1e-4)


def test_perplexity_ranks_coherent_below_shuffled_and_batches_exactly(smollm2):
    model, tok = smollm2
    prompts = ["Anna walked to the market on Monday morning.", "Tom went to the library.",
               "Count with me: one, two, three, four,"]
    good = ["She bought three red apples.", "He borrowed an old book.", "five, six, seven, eight."]
    shuffled = ["apples red She three bought.", "book He an borrowed old.", "eight, seven five, six."]
    batched = continuation_perplexity(model, tok, prompts * 2, good + shuffled, batch_size=6)
    single = [continuation_perplexity(model, tok, [p], [c], batch_size=1)[0]
              for p, c in zip(prompts * 2, good + shuffled)]
    assert batched == pytest.approx(single, rel=1e-4)  # right padding changes nothing
    assert all(g < s for g, s in zip(batched[:3], batched[3:]))
    # the prompt conditions the continuation
    unrelated = continuation_perplexity(model, tok, ["The weather was windy."], [good[2]])[0]
    assert batched[2] < unrelated


def test_perplexity_edge_cases(smollm2):
    model, tok = smollm2
    # an empty prompt starts from the EOS token; a too-long prompt loses its start, not the continuation
    assert math.isfinite(continuation_perplexity(model, tok, [""], ["She smiled."])[0])
    long_prompt = "Tom walked to the park. " * 8
    (_, n_cut), = continuation_nll(model, tok, [long_prompt], ["He sat down."], max_length=16)
    (_, n_full), = continuation_nll(model, tok, [long_prompt], ["He sat down."])
    assert n_cut == n_full
    with pytest.raises(ValueError, match="empty continuation"):
        continuation_perplexity(model, tok, ["Tom ran."], [" "])
    with pytest.raises(ValueError, match="1 prompts but 2"):
        continuation_perplexity(model, tok, ["a"], ["b", "c"])
    with pytest.raises(ValueError, match="does not fit"):
        continuation_nll(model, tok, ["a"], ["word " * 30], max_length=8)
    model.train()
    try:
        continuation_perplexity(model, tok, ["a"], ["b"])
        assert model.training
    finally:
        model.eval()


# -- preference pairs -----------------------------------------------------------------------------

def _c(score, bleu=0.0, ppl=None, text=None):
    return Candidate(text or f"s{score}-b{bleu}-p{ppl}", score, bleu, ppl, [1, 2, 3])


def _group(pid, *cands):
    return PromptCandidates(pid, [7, 8], list(cands), prompt_text=f"prompt {pid}")


def test_judge_pairs_best_vs_worst_with_repetition_rule():
    groups = [
        _group("a", _c(2.0), _c(4.5), _c(3.2), _c(1.0), _c(0.5 + 0.5)),  # best 4.5 (1) vs worst 1.0 (first: 3)
        _group("b", _c(5.0, bleu=0.5), _c(3.0), _c(2.0)),                 # 5.0 is repetitive: chosen 3.0 vs it
        _group("c", _c(4.0), _c(None, bleu=0.2), _c(1.0, bleu=0.15)),     # repetitive, unscored, rejected: higher bleu
        _group("d", _c(4.0, bleu=0.05), _c(4.0, bleu=0.0), _c(1.0)),      # tie on score: lower auto-BLEU wins
        _group("e", _c(4.0), _c(4.0), _c(1.0), _c(1.0)),                  # full ties: earlier candidate
    ]
    pairs, stats = build_judge_pairs(groups)
    got = {p.prompt_id: (p.chosen_index, p.rejected_index) for p in pairs}
    assert got == {"a": (1, 3), "b": (1, 0), "c": (0, 1), "d": (1, 2), "e": (0, 2)}
    assert pairs[0].chosen.score == 4.5 and pairs[0].rejected.score == 1.0 and pairs[0].feedback == "judge"
    assert pairs[0].prompt_units == [7, 8] and pairs[0].prompt_text == "prompt a"
    assert stats["pairs"] == 5 and stats["prompts"] == 5 and sum(stats["dropped"].values()) == 0
    assert stats["repetitive_candidates"] == 3 and stats["unscored_candidates"] == 1


def test_context_pairs_prefer_a_prompts_own_continuation_over_another_prompts():
    groups = [_group(pid, _c(None, text=f"{pid}0"), _c(None, text=f"{pid}1")) for pid in "abc"]
    for g in groups:
        g.prompt_units = [ord(g.prompt_id)]
    groups[2].candidates.pop()  # c: one continuation
    contrast = context_pairs(groups, seed=[0, 1])
    assert contrast == context_pairs(groups, seed=[0, 1])  # seeded
    for pair in contrast:  # j-th own continuation over the j-th of another prompt, on its own prompt
        assert pair.prompt_units == [ord(pair.prompt_id)] and pair.chosen.transcript[0] == pair.prompt_id
        assert pair.rejected.transcript[0] != pair.prompt_id
        assert pair.chosen.transcript[1] == pair.rejected.transcript[1] == str(pair.chosen_index)
        assert pair.feedback == "context" and pair.rejected_index == -1
    rejected_from = {p.prompt_id: p.rejected.transcript[0] for p in contrast}
    assert sorted(rejected_from) == sorted(rejected_from.values()) == list("abc")  # one cycle over the prompts
    # a prompt whose other has one continuation contrasts one; c has one: 2 + 1 + 1, or 1 + 2 + 1
    assert len(contrast) == 4 and sum(p.chosen_index == 1 for p in contrast) == 1
    assert context_pairs(groups[:1]) == [] and context_pairs([]) == []


def test_judge_pairs_thresholds_and_drop_reasons():
    groups = [
        _group("few", _c(5.0)),                                # too_few
        _group("unscored", _c(None), _c(None)),                # unscored
        _group("no_chosen", _c(2.9), _c(1.0), _c(None)),       # nothing reaches s_c = 3
        _group("no_rejected", _c(3.0), _c(1.01), _c(None)),    # nothing at or below s_r = 1
        _group("edges", _c(3.0), _c(1.0)),                     # both thresholds are inclusive
        _group("only_rep", _c(None, bleu=0.9), _c(None)),      # a repetitive one is rejected, but no chosen
    ]
    pairs, stats = build_judge_pairs(groups)
    assert [p.prompt_id for p in pairs] == ["edges"]
    assert stats["dropped"] == {"too_few": 1, "unscored": 1, "no_chosen": 2, "no_rejected": 1, "tie": 0}
    # the curriculum's second round (4/2) keeps fewer pairs from the same candidates
    round2, stats2 = build_judge_pairs([_group("x", _c(3.5), _c(2.0)), _group("y", _c(4.0), _c(2.0))],
                                       chosen_min=4.0, rejected_max=2.0)
    assert [p.prompt_id for p in round2] == ["y"] and stats2["dropped"]["no_chosen"] == 1
    # δ is strict: auto-BLEU exactly 0.1 is not repetitive
    pairs, _ = build_judge_pairs([_group("z", _c(4.0, bleu=0.1), _c(1.0))])
    assert pairs[0].chosen_index == 0
    with pytest.raises(ValueError, match="must exceed"):
        build_judge_pairs(groups, chosen_min=2.0, rejected_max=2.0)
    with pytest.raises(ValueError, match="δ"):
        build_judge_pairs(groups, max_auto_bleu=1.5)


def test_ppl_pairs_lowest_vs_highest():
    groups = [
        _group("a", _c(None, ppl=30.0), _c(None, ppl=12.0), _c(None, ppl=80.0), _c(None, ppl=12.0)),
        _group("rep", _c(None, ppl=2.0, bleu=0.6), _c(None, ppl=20.0), _c(None, ppl=50.0)),
        _group("tie", _c(None, ppl=9.0), _c(None, ppl=9.0)),
        _group("one", _c(None, ppl=9.0), _c(None, ppl=float("nan"))),
        _group("none", _c(None), _c(None)),
    ]
    pairs, stats = build_ppl_pairs(groups)
    got = {p.prompt_id: (p.chosen_index, p.rejected_index) for p in pairs}
    # low-PPL repetition is never chosen and is the rejected one
    assert got == {"a": (1, 2), "rep": (1, 0)}
    assert all(p.feedback == "ppl" for p in pairs)
    assert stats["dropped"] == {"too_few": 0, "unscored": 1, "no_chosen": 0, "no_rejected": 1, "tie": 1}
    # without the repetition bound the repetition wins on PPL (the plain PPL-feedback rule)
    pairs, _ = build_ppl_pairs(groups[1:2], max_auto_bleu=None)
    assert (pairs[0].chosen_index, pairs[0].rejected_index) == (0, 2)


def test_pairs_save_load_roundtrip_and_datasets(tmp_path):
    groups = [_group("a", _c(4.0, ppl=float("inf"), text="she bought apples"), _c(1.0, bleu=0.3, ppl=3.5)),
              _group("b", _c(5.0, ppl=7.0), _c(2.0, bleu=0.5))]
    pairs, _ = build_judge_pairs(groups)
    path = save_pairs(pairs, tmp_path / "pairs.jsonl")
    back = load_pairs(path)
    assert [p.prompt_id for p in back] == ["a", "b"]
    assert back[0].chosen.transcript == "she bought apples" and back[0].chosen.ppl is None  # inf → null
    assert back[0].rejected.auto_bleu == 0.3 and back[0].rejected.units == [1, 2, 3]
    assert back[1].chosen_index == 0 and back[1].rejected_index == 1 and back[1].prompt_units == [7, 8]
    import datasets

    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds.num_rows == 2 and ds[1]["chosen_score"] == 5.0 and ds[0]["rejected_units"] == [1, 2, 3]
    (tmp_path / "bad.jsonl").write_text('{"prompt_id": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing.jsonl")


def test_score_quantiles_hand_computed():
    # finite, non-repetitive scores: 1, 1, 2, 3, 5 (the unscored and the repetitive 4.8 do not count)
    groups = [_group("a", _c(1.0), _c(3.0), _c(None)), _group("b", _c(5.0), _c(1.0), _c(2.0), _c(4.8, bleu=0.5))]
    # q = 0.75 → position 3 of 0..4 → 3.0; q = 0.25 → position 1 → 1.0; q = 0.9 → 3 + 0.6·(5 − 3) = 4.2
    assert score_quantiles(groups, 0.75, 0.25) == (3.0, 1.0)
    assert score_quantiles(groups, 0.9, 0.5) == (pytest.approx(4.2), 2.0)
    # tied quantiles: s_c nudged just above s_r, so build_judge_pairs accepts them and 1.0 is not chosen
    s_c, s_r = score_quantiles(groups, 0.2, 0.0)
    assert s_r == 1.0 and 1.0 < s_c < 1.0 + 1e-9
    pairs, _ = build_judge_pairs(groups, s_c, s_r)
    assert {(p.prompt_id, p.chosen.score, p.rejected.score) for p in pairs} == {("a", 3.0, 1.0), ("b", 5.0, 4.8)}
    with pytest.raises(ValueError, match="quantiles"):
        score_quantiles(groups, 0.25, 0.75)
    with pytest.raises(ValueError, match="no scored"):
        score_quantiles([_group("u", _c(None), _c(None))], 0.75, 0.25)


def test_candidates_save_load_roundtrip(tmp_path):
    groups = [_group("a", _c(4.0, ppl=float("nan"), text="she bought apples"), _c(None, bleu=0.3)),
              _group("b", _c(2.5))]
    back = load_candidates(save_candidates(groups, tmp_path / "cands.jsonl"))
    assert [g.prompt_id for g in back] == ["a", "b"] and back[0].prompt_text == "prompt a"
    assert back[0].candidates[0].transcript == "she bought apples" and back[0].candidates[0].ppl is None
    assert back[0].candidates[1].score is None and back[0].candidates[1].auto_bleu == 0.3
    assert back[1].candidates[0].units == [1, 2, 3] and back[1].prompt_units == [7, 8]
    assert build_judge_pairs(back)[1] == build_judge_pairs(groups)[1]  # same pairs from the stored copy
    (tmp_path / "bad.jsonl").write_text('{"prompt_id": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_candidates(tmp_path / "bad.jsonl")
