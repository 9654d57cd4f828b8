"""Rewards: hand-checked values, the hallucination sub-checks, MiniLM similarity, the weighted
combination, TRL's calling convention, and property tests (finite and in range for any text)."""

import inspect
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechrl.rewards import (
    REWARDS,
    Hallucination,
    WeightedReward,
    accuracy_cer,
    accuracy_wer,
    bleu,
    detect_language,
    embedding_similarity,
    hallucination,
    has_unsupported_content,
    is_repetitive,
    is_wrong_language,
    keyword_precision_recall,
    keyword_score,
    make_reward,
    meteor,
    rouge1,
    rouge2,
    rouge_l,
    tanh_wer,
)

REF = "The cat sat on the mat."


def one(fn, hyp, ref, **columns):
    """The reward of a single sample."""
    (value,) = fn(prompts=["p"], completions=[hyp], reference=[ref], **columns)
    return value


@pytest.fixture(scope="module")
def minilm():
    """Loads MiniLM once for the module (the encoder is cached per process).

    One torch thread while it runs: on a busy 2-core machine two OpenMP threads made each tiny
    encode ≈20× slower (0.8 s instead of 0.04 s), waiting on each other.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    embedding_similarity(prompts=None, completions=["warm up"], reference=["warm up"])
    yield embedding_similarity
    torch.set_num_threads(threads)


# --- hand-checked values ---------------------------------------------------------------------

@pytest.mark.parametrize("fn", [bleu, rouge1, rouge2, rouge_l, accuracy_wer, accuracy_cer,
                                tanh_wer])
def test_perfect_hypothesis_scores_one(fn):
    assert one(fn, REF, REF) == pytest.approx(1.0)


def test_bleu_by_hand():
    # precisions 5/6, 3/5, 2/4, 1/3; no brevity penalty → (1/12)^(1/4)
    assert one(bleu, "the cat sat on the mat", "the cat sat on a mat") == pytest.approx(
        (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert one(bleu, "yes", "yes") == 1.0  # effective order: a one-word answer can be perfect
    assert one(bleu, "The cat", "the cat") < 1.0  # case-sensitive, as sacreBLEU reports BLEU
    assert one(bleu, "", "") == 1.0 and one(bleu, "", "cat") == 0.0


ANSWERS = ["Anna walked to the market.", "She walked to the market.", "Anna went to the market."]


def test_bleu_against_several_references_by_hand():
    """Spoken QA's free-form answers: any accepted wording scores 1.0 (sacreBLEU's multi-reference
    sentence BLEU: n-gram matches clipped by the most any one reference holds)."""
    assert bleu(None, [ANSWERS[1]], references=[ANSWERS]) == [1.0]  # the second reference: BLEU 100
    # against the first alone: only the n-grams with "She" unmatched → precisions 5/6, 4/5, 3/4, 2/3 (13a:
    # the "." is a token)
    assert one(bleu, ANSWERS[1], ANSWERS[0]) == pytest.approx((5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    # a wording none of them has, "She" from the second and "went" from the third: 6/6 words, 4/5
    # bigrams ("She went" is in none), 3/4 trigrams, 2/3 4-grams; closest reference length 6: no penalty
    assert bleu(None, ["She went to the market."], references=[ANSWERS]) == [
        pytest.approx((1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)]
    # an empty references entry falls back to that sample's reference
    assert bleu(None, ["a b", "x"], reference=["a b", "x"], references=[[], ["y", "x"]]) == [1.0, 1.0]
    assert rouge_l(None, [ANSWERS[2]], references=[ANSWERS]) == [1.0]  # the best reference's F-measure
    assert meteor(None, [ANSWERS[2]], references=[ANSWERS]) == [pytest.approx(1 - 0.5 / 5**3)]


def test_wer_accuracy_and_tanh_by_hand():
    wer = 1 / 6  # one substitution in six words
    assert one(accuracy_wer, "the cat sat on a mat", REF) == pytest.approx(1 - wer)
    assert one(tanh_wer, "the cat sat on a mat", REF) == pytest.approx(1 - math.tanh(3 * wer))
    assert one(accuracy_wer, "The cat sat on the mat!!", "the cat sat on the mat") == 1.0
    assert one(accuracy_wer, "no no no", "yes") == -1.0  # WER 3, floored at −1
    assert one(tanh_wer, "no no no", "yes") == pytest.approx(1 - math.tanh(9.0))
    assert one(accuracy_cer, "abd", "abc") == pytest.approx(2 / 3)
    assert one(accuracy_wer, "", "") == 1.0


def test_rouge_by_hand():
    hyp, ref = "the cat ran", "the cat sat"
    assert one(rouge1, hyp, ref) == pytest.approx(2 / 3)  # P = R = 2/3
    assert one(rouge2, hyp, ref) == pytest.approx(1 / 2)  # "the cat" of 2 bigrams each side
    assert one(rouge_l, hyp, ref) == pytest.approx(2 / 3)  # LCS "the cat"
    assert one(rouge1, "La canción", "la canción.") == 1.0  # non-ASCII letters are kept


def test_meteor_exact_and_stem_without_synonyms():
    n = 6
    assert one(meteor, REF, REF) == pytest.approx(1 - 0.5 / n**3)  # one chunk of n words
    assert one(meteor, "the cat ran", "the cats ran") == pytest.approx(1 - 0.5 / 27)  # stem match
    assert one(meteor, "big", "large") == 0.0  # no WordNet synonyms offline
    assert one(meteor, "", "") == 1.0 and one(meteor, "cat", "") == 0.0


def test_keyword_precision_recall_by_hand():
    ref = "Alice met Bob in Paris, and Bob smiled."
    hyp = "alice met bob in london and carol smiled"
    keywords = ["Bob", "paris", "Carol", "  "]
    # reference mentions: bob 2, paris 1, carol 0; hypothesis: bob 1, paris 0, carol 1; hits = 1
    assert keyword_precision_recall(hyp, ref, keywords) == pytest.approx((1 / 2, 1 / 3))
    assert one(keyword_score, hyp, ref, keywords=[keywords]) == pytest.approx(5 / 12)
    assert one(keyword_score, ref, ref, keywords=[keywords]) == 1.0
    assert one(keyword_score, "", ref, keywords=[keywords]) == 0.0  # misses every keyword
    # no keywords (none, blank, missing): nothing to judge → None ("not applicable"), not a free 1.0
    assert keyword_score(None, ["anything"] * 3, reference=["at all"] * 3, keywords=[[], ["  "], None]) == [None] * 3
    assert keyword_precision_recall("we saw new york", "new york city", ["New York"]) == (1.0, 1.0)


# --- hallucination ---------------------------------------------------------------------------

def test_hallucination_fires_on_each_failure_and_not_on_correct_output():
    assert one(hallucination, "the cat sat on the mat", REF, language=["en"]) == 0.0
    assert one(hallucination, "the bat sad on a hat", REF, language=["en"]) == 0.0  # plain errors
    loop = "the cat sat on the mat on the mat on the mat on the mat"
    assert one(hallucination, loop, REF, language=["en"]) == -1.0
    extra = "the cat sat on the mat and then the dog went home to sleep"
    assert one(hallucination, extra, REF, language=["en"]) == -1.0
    spanish = "el gato se sentó en la alfombra"
    assert one(hallucination, spanish, REF, language=["en"]) == -1.0
    assert one(hallucination, spanish, REF) == -1.0  # no language column: taken from the reference
    assert one(hallucination, spanish, "El gato se sentó en la alfombra.", language=["es"]) == 0.0


def test_hallucination_sub_checks():
    assert is_repetitive("thank you thank you thank you thank you", "thank you")
    assert not is_repetitive("thank you thank you", "thank you")
    assert is_repetitive("no no no no", "no")  # a run of four
    assert not is_repetitive("no no no no", "no no no no")  # the reference says it too
    assert has_unsupported_content("thanks for watching", "")
    assert not has_unsupported_content("", "the cat")
    assert not has_unsupported_content("a dog stood by a rug", REF)  # same length: just errors
    assert detect_language("The dog and the cat were at home") == "en"
    assert detect_language("El perro y el gato estaban en casa") == "es"
    assert detect_language("Paris") is None
    assert is_wrong_language("la casa es muy grande", "English")
    assert not is_wrong_language("la casa es muy grande", "es-ES")
    assert not is_wrong_language("the house is big", "de")  # only en/es are judged
    assert not is_wrong_language("José María", "en", "José María")  # names, as the reference says
    checks = Hallucination().checks("el gato el gato el gato el gato", "the cat", "en")
    assert checks == {"repetition": True, "unsupported": True, "wrong_language": True}
    lenient = Hallucination(min_ngram_count=10, max_length_ratio=10.0)
    assert one(lenient, "the cat the cat the cat", "the cat") == 0.0


# --- embeddings ------------------------------------------------------------------------------

def test_embedding_similarity_paraphrase_beats_unrelated(minilm):
    ref = "The boy bought three red apples at the market."
    values = minilm(prompts=None, reference=[ref] * 3, completions=[
        ref, "At the market, the young boy purchased three red apples.",
        "Quarterly interest rates rose sharply in the banking sector."])
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert values[1] > 0.7 > values[2]
    assert values[1] > values[2] + 0.3
    # several references: the closest one's similarity
    paraphrase, unrelated = "At the market, the young boy purchased three red apples.", "Quarterly interest rates."
    many = minilm(prompts=None, completions=[ref, paraphrase], references=[[unrelated, ref]] * 2)
    assert many == pytest.approx([1.0, values[1]], abs=1e-5)


# --- combination -----------------------------------------------------------------------------

def test_weighted_reward_by_hand_and_per_reward_values():
    combo = make_reward({"bleu": 1.0, "accuracy_wer": 0.5})
    hyps = ["the cat sat on the mat", "the cat sat on a mat"]
    total = combo(prompts=["p", "p"], completions=hyps, reference=["the cat sat on a mat"] * 2)
    wer_accuracy = 1 - 1 / 6
    bleu_value = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert total == pytest.approx([bleu_value + 0.5 * wer_accuracy, 1.0 + 0.5])
    assert combo.last_values["bleu"] == pytest.approx([bleu_value, 1.0])
    assert combo.last_values["accuracy_wer"] == pytest.approx([wer_accuracy, 1.0])
    metrics = combo.metrics()
    assert metrics["rewards/bleu_mean"] == pytest.approx((bleu_value + 1) / 2)
    assert metrics["rewards/invalid_count"] == 0
    assert combo.weights == {"bleu": 1.0, "accuracy_wer": 0.5}


def test_weighted_reward_marks_nan_inf_invalid_and_leaves_none_out():
    def flaky(prompts, completions, **columns):
        return [1.0, math.nan, math.inf, None]

    combo = WeightedReward({"ok": (lambda prompts, completions, **c: [1.0] * 4, 1.0),
                            "flaky": (flaky, 2.0)})
    total = combo(prompts=None, completions=["a", "b", "c", "d"])
    assert total[0] == 3.0 and math.isnan(total[1]) and math.isnan(total[2])
    assert total[3] == 1.0  # None: "not applicable", the flaky term is left out, the other stands
    assert combo.last_invalid == [False, True, True, False]
    assert combo.last_not_applicable["flaky"] == [False, False, False, True]
    assert combo.invalid_total == 2
    combo(prompts=None, completions=["a", "b", "c", "d"])
    assert combo.invalid_total == 4
    metrics = combo.metrics()
    assert metrics["rewards/invalid_count"] == 2 and metrics["rewards/flaky_not_applicable"] == 1
    assert metrics["rewards/flaky_mean"] == 1.0 and metrics["rewards/total_mean"] == 2.0


def test_keywordless_examples_get_no_keyword_term():
    """Bug fixed: keyword_score gave 1.0 to any output of an example without keywords, so the ASR
    recipe's total carried a free +0.5 on such data. Now that sample's total is its other terms."""
    refs = ["alice met bob", "alice met bob", "the cat sat", "the cat sat"]
    hyps = ["alice met bob", "alice met rob", "the cat sat", "a cat sat"]
    keywords = [["bob"], ["bob"], [], []]
    spec = {"accuracy_wer": 1.0, "hallucination": 1.0, "keyword_score": 0.5}
    combo = make_reward(spec)
    total = combo(None, hyps, reference=refs, keywords=keywords, language=["en"] * 4)
    others = [accuracy_wer(None, [h], reference=[r])[0] + hallucination(None, [h], reference=[r])[0]
              for h, r in zip(hyps, refs)]
    assert total[2:] == pytest.approx(others[2:])  # no keywords: exactly the other terms
    assert total[:2] == pytest.approx([others[0] + 0.5 * 1.0, others[1] + 0.5 * 0.0])
    assert combo.last_not_applicable["keyword_score"] == [False, False, True, True]
    assert combo.last_invalid == [False] * 4
    assert combo.metrics()["rewards/keyword_score_mean"] == 0.5  # over the samples it judged


def test_a_sample_no_reward_applies_to_has_no_total():
    combo = make_reward({"keyword_score": 1.0})
    total = combo(None, ["x", "bob"], reference=["bob", "bob"], keywords=[[], ["bob"]])
    assert math.isnan(total[0]) and total[1] == 1.0  # never a free 0: masked by the trainer
    assert combo.last_invalid == [True, False]


def test_make_reward_and_weighted_reward_errors():
    with pytest.raises(ValueError, match="allowed:.*bleu"):
        make_reward({"bleu": 1.0, "blue": 1.0})
    with pytest.raises(ValueError, match="finite"):
        make_reward({"bleu": math.nan})
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        WeightedReward({"short": (lambda prompts, completions, **c: [0.0], 1.0)})(
            prompts=None, completions=["a", "b"])
    with pytest.raises(ValueError, match="3 entries for 2"):
        bleu(prompts=None, completions=["a", "b"], reference=["a", "b", "c"])
    with pytest.raises(TypeError, match="expected str"):
        bleu(prompts=None, completions=["a"], reference=[3])


# --- TRL calling convention ------------------------------------------------------------------

def test_trl_signature_and_extra_kwargs():
    from trl.trainer.utils import get_callable_name

    trl_extras = {"completion_ids": [[1, 2], [3]], "trainer_state": None,
                  "log_extra": lambda *a: None, "log_metric": lambda *a: None}
    columns = {"reference": [REF, REF], "references": [[REF, "a cat"], [REF]], "keywords": [["cat"], ["mat"]],
               "language": ["en", "en"],
               "seconds": [1.0, 1.5], "group": [0, 0], "speech_tokens": [[1, 2], [3]]}  # + the TTS rewards' columns
    for name, fn in REWARDS.items():
        assert fn.name == name and get_callable_name(fn) == name  # the name TRL logs it under
        inspect.signature(fn).bind(prompts=["a", "b"], completions=["x", "y"], **columns,
                                   **trl_extras)
        if name == "embedding_similarity":
            continue  # exercised in its own test, without reloading
        values = fn(prompts=["a", "b"], completions=[REF, "dog"], **columns, **trl_extras)
        assert len(values) == 2 and all(isinstance(v, float) for v in values)
    chat = [[{"role": "assistant", "content": REF}]]  # TRL's conversational completions
    assert bleu(prompts=[[{"role": "user", "content": "q"}]], completions=chat,
                reference=[REF]) == [1.0]


# --- robustness ------------------------------------------------------------------------------

def _in_range(fn, values, n):
    """Every value a finite float in the documented range; None ("not applicable") only from
    keyword_score, for a sample without keywords."""
    low, high = fn.value_range
    return len(values) == n and all(
        (v is None and fn.name == "keyword_score")
        or (isinstance(v, float) and math.isfinite(v) and low <= v <= high) for v in values)


ODD_TEXTS = ["", "   \n\t ", "¿Qué? ¡Sí! — 東京 🎉 naïve café", "\u200b\u00ad", "'''",
             "1,000 3.14 21%", "word " * 1000, None]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_odd_inputs_give_values_in_range(name, minilm):
    fn = REWARDS[name]
    n = len(ODD_TEXTS)
    for refs in (ODD_TEXTS, ODD_TEXTS[::-1], [REF] * n):
        values = fn(prompts=None, completions=ODD_TEXTS, reference=refs,
                    keywords=[["cat"], [], ["東京"], ["  "], None, ["3.14"], ["word"], ["x"]],
                    language=["en", "es", None, "", "de", "English", "es-MX", "xx"],
                    seconds=[0.5 * (i + 1) for i in range(n)], group=[i // 4 for i in range(n)],
                    speech_tokens=[[i] * i for i in range(n)])
        assert _in_range(fn, values, n), (name, values)


texts = st.text(max_size=80) | st.sampled_from(["", " ", REF, "el gato está en la casa",
                                               "la la la la la", "thank you " * 5])


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hyps=st.lists(texts, min_size=1, max_size=3), data=st.data())
def test_every_reward_is_finite_and_in_range(hyps, data, minilm):
    n = len(hyps)
    refs = data.draw(st.lists(texts, min_size=n, max_size=n))
    keywords = data.draw(st.lists(st.lists(texts, max_size=3), min_size=n, max_size=n))
    language = data.draw(st.lists(st.sampled_from(["en", "es", "de", None]) | st.text(max_size=5),
                                  min_size=n, max_size=n))
    for name, fn in REWARDS.items():
        values = fn(prompts=[""] * n, completions=hyps, reference=refs, keywords=keywords,
                    language=language, seconds=[1.0] * n, group=list(range(n)), speech_tokens=[[1]] * n)
        assert _in_range(fn, values, n), (name, hyps, refs, values)
