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
