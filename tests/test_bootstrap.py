"""Paired bootstrap intervals: hand-computed cases, the resampled statistic is the reported corpus metric,
seeded determinism."""

import numpy as np
import pytest
import sacrebleu

from speechrl.eval.bootstrap import (bleu_stats, corpus_bleu, error_stats, intervals, mean_stats,
                                     paired_bootstrap, ratio)
from speechrl.eval.speech_tasks import task_item_stats, task_metrics
from speechrl.text import cer, wer


def test_item_stats_by_hand():
    # "down" inserted: 1 edit over 3 words; an empty reference: every hypothesis word an insertion, no words
    assert error_stats(["the cat sat", ""], ["the cat sat down", "oh yes"]).tolist() == [[1, 3], [2, 0]]
    assert error_stats(["ab"], ["b"], "char").tolist() == [[1, 2]]
    assert mean_stats([[1.0, 3.0], 5.0]).tolist() == [[4, 2], [5, 1]]
    assert ratio(mean_stats([[1.0, 3.0], 5.0]).sum(0)) == 3.0  # the mean over the three scores
    # sacreBLEU segment stats: 3 hyp tokens, 4 ref tokens, 3/2/1/0 matches of 3/2/1/0 n-grams
    assert bleu_stats(["the cat sat"], ["the cat sat down"]).tolist() == [[3, 4, 3, 2, 1, 0, 3, 2, 1, 0]]


def test_summed_item_stats_are_the_reported_corpus_metrics():
    refs = ["the red fox runs home", "", "anna finds a blue key", "tom walks to the old mill"]
    hyps = ["the red fox run home", "uh", "anna finds blue key", "tom walks to the old mill today"]
    assert ratio(error_stats(refs, hyps).sum(0)) == pytest.approx(wer(refs, hyps))
    assert ratio(error_stats(refs, hyps, "char").sum(0)) == pytest.approx(cer(refs, hyps))
    assert corpus_bleu(bleu_stats(hyps, refs).sum(0)) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    for task, metric in (("asr", "wer"), ("asr", "cer"), ("ast", "bleu")):
        stats = np.array(task_item_stats(task, hyps, refs)[metric]).sum(0)
        reported = task_metrics(task, hyps, refs, semantic=False)[metric]
        value = corpus_bleu(stats) if metric == "bleu" else ratio(stats)
        assert value == pytest.approx(reported, abs=0.01 if metric == "bleu" else 1e-4)  # reported is rounded


def test_several_references_per_item_score_as_multi_reference_corpus_bleu():
    """Spoken QA's free-form answers: items with 2 or 3 accepted wordings. A hypothesis equal to any one
    of them is perfect; the summed item stats are sacreBLEU's multi-reference corpus BLEU (the missing
    references of an item with fewer: ``None``), on the normalised texts as reported."""
    refs = [["Anna walked to the market.", "She walked to the market.", "Anna went to the market."],
            ["It was a rainy day.", "The day was rainy."]]
    exact = ["She walked to the market.", "The day was rainy."]
    assert task_metrics("sqa", exact, refs, semantic=False)["bleu"] == 100.0
    assert task_metrics("sqa", exact, refs, semantic=False)["rouge_l"] == 1.0
    assert task_metrics("sqa", exact, [r[0] for r in refs], semantic=False)["bleu"] < 100  # the first wording only
    hyps = ["she went to the market", "it was a rainy"]
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(3)]
    reported = task_metrics("sqa", hyps, refs, semantic=False)
    assert reported["bleu_sacre"] == round(sacrebleu.corpus_bleu(hyps, streams).score, 2)
    stats = np.array(task_item_stats("sqa", hyps, refs)["bleu"])
    assert corpus_bleu(stats.sum(0)) == pytest.approx(reported["bleu"], abs=0.01)
    assert bleu_stats(["b c"], [["a b c", "b c d e"]]).tolist() == [[2, 3, 2, 1, 0, 0, 2, 1, 0, 0]]  # closest: 3


def test_a_constant_gain_per_item_has_a_point_interval():
    # 4 reference words per item, the system makes one edit more on every item: every resample's WER
    # difference is (Σe + n) / 4n − Σe / 4n = 1/4
    base = np.array([[1, 4], [2, 4], [0, 4]])
    got = paired_bootstrap(base, base + [1, 0])
    assert got == {"diff": 0.25, "low": 0.25, "high": 0.25, "significant": True}


def test_a_system_equal_to_the_baseline_is_not_significant():
    base = error_stats(["a b c", "d e", "f"], ["a x c", "d", "f g"])
    assert paired_bootstrap(base, base.copy()) == {"diff": 0.0, "low": 0.0, "high": 0.0, "significant": False}


def test_two_items_interval_by_hand():
    """Per-item differences 0 and 1: a resample of two items has mean difference 0 (both the first, p 1/4),
    1/2 (p 1/2) or 1 (p 1/4), so the 2.5/97.5 percentiles of 1,000 draws are 0 and 1: the interval [0, 1]
    holds 0, the gain of 0.5 is not significant."""
    base, system = mean_stats([0.0, 0.0]), mean_stats([0.0, 1.0])
    assert paired_bootstrap(base, system) == {"diff": 0.5, "low": 0.0, "high": 1.0, "significant": False}


def test_seeded_and_paired():
    rng = np.random.default_rng(1)
    base = mean_stats(rng.random(40).tolist())
    system = mean_stats((base[:, 0] + rng.normal(0.05, 0.2, 40)).tolist())
    first = paired_bootstrap(base, system, seed=3)
    assert paired_bootstrap(base, system, seed=3) == first  # same command, same interval
    assert paired_bootstrap(base, system, seed=4) != first
    assert first["low"] <= first["diff"] <= first["high"]
    # paired: a shift shared by both systems on every item (a hard item is hard for both) cancels out
    shared = rng.normal(0, 5, 40)
    shifted = paired_bootstrap(base + np.c_[shared, np.zeros(40)], system + np.c_[shared, np.zeros(40)], seed=3)
    assert shifted["low"] == pytest.approx(first["low"], abs=1e-3)


def test_a_clear_gain_is_significant():
    refs = [f"word{'abcdefghij'[i % 10]}{'abc'[i // 10]} again and again here" for i in range(30)]
    base = error_stats(refs, [r.replace("again", "gain") for r in refs])  # 2 of 5 words wrong
    system = error_stats(refs, [r.replace(" here", " hear") if i % 3 else r for i, r in enumerate(refs)])
    got = paired_bootstrap(base, system)
    assert got["significant"] and got["low"] <= got["diff"] <= got["high"] < 0
    assert got["diff"] == pytest.approx(wer(refs, [r.replace(" here", " hear") if i % 3 else r
                                                   for i, r in enumerate(refs)]) - 0.4, abs=1e-4)


def test_bleu_interval_uses_corpus_bleu():
    refs = ["the cat sat on the mat", "a dog runs in the park", "birds sing in the morning"] * 4
    base = bleu_stats(["the cat sat", "a dog runs", "birds sing"] * 4, refs)
    system = bleu_stats(refs, refs)
    got = paired_bootstrap(base, system, corpus_bleu)
    observed = 100.0 - sacrebleu.corpus_bleu(["the cat sat", "a dog runs", "birds sing"] * 4, [refs]).score
    assert got["diff"] == pytest.approx(observed, abs=1e-4) and got["significant"]


def test_intervals_pair_systems_with_the_baseline():
    items = {"sft": {"wer": [[1, 4], [2, 4]], "cer": [[1, 9], [0, 9]]},
             "grpo": {"wer": [[0, 4], [1, 4]], "cer": [[1, 9]]},  # cer: another number of items, skipped
             "old": {}}
    got = intervals(items, "sft", ["sft", "grpo", "old", "missing"])
    assert set(got) == {"grpo"} and set(got["grpo"]) == {"wer"}
    assert got["grpo"]["wer"] == {"diff": -0.25, "low": -0.25, "high": -0.25, "significant": True}
    with pytest.raises(ValueError, match="same non-empty"):
        paired_bootstrap(np.zeros((2, 2)), np.zeros((3, 2)))
