"""A metric's direction has one home (speechrl.eval.metrics): the report, the demo and dev selection agree."""

from speechrl.eval.metrics import lower_is_better, selection_score


def test_direction_by_words_of_the_name():
    assert lower_is_better("test_wer") and lower_is_better("dev_nll") and lower_is_better("auto_bleu")
    assert not lower_is_better("bleu") and not lower_is_better("judge_score")


def test_selection_score_is_higher_for_the_better_model():
    assert selection_score("asr", {"wer": 0.25, "cer": 0.1}) == -0.25  # a task's metric
    assert selection_score("tts", {"wer": 0.5}) == -0.5
    assert selection_score("sqa", {"bleu": 18.4}) == 18.4
    assert selection_score("nll", {"nll": 2.0}) == -2.0  # or a metric by name


def test_asr_metrics_split_the_errors_and_count_hallucinated_outputs():
    from speechrl.eval.speech_tasks import task_metrics

    refs = ["the cat sat on the mat", "a dog ran home", "we went out"]
    hyps = ["the cat sat on a mat", "a dog ran home home home home home home", "we out"]
    m = task_metrics("asr", hyps, refs)
    # 13 reference words: 1 substitution, 1 deletion, 5 insertions
    assert (m["substitution_rate"], m["deletion_rate"], m["insertion_rate"]) == (round(1 / 13, 4), round(1 / 13, 4),
                                                                                 round(5 / 13, 4))
    assert m["wer"] == round(7 / 13, 4)
    assert m["hallucination_rate"] == round(1 / 3, 4)  # the decoding loop
