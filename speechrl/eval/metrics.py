"""Which way a metric is better, and the one number model selection maximises.

Lower is better for the error- and cost-like metrics of :data:`LOWER_IS_BETTER`, matched as words of
the metric name (``test_wer``, ``unit_roundtrip_wer``, ``dev_nll``) or, when they contain an
underscore, as part of it (``auto_bleu``); higher is better for the rest (``bleu``,
``answer_accuracy``, ``judge_score``). The report's arrows, the demo's headline and every trainer's
dev selection read the direction from here.
"""

from __future__ import annotations

import re

__all__ = ["LOWER_IS_BETTER", "TASK_METRIC", "lower_is_better", "selection_score"]

LOWER_IS_BETTER = ("wer", "cer", "genppl", "auto_bleu", "nll", "loss")

# a task's headline and dev-selection metric
TASK_METRIC = {"asr": "wer", "sqa": "bleu", "ast": "bleu", "tts": "wer"}


def lower_is_better(metric: str) -> bool:
    """True for error-like metrics (:data:`LOWER_IS_BETTER`, as in the module docstring), else False."""
    name = metric.lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    return any(m in words if "_" not in m else m in name for m in LOWER_IS_BETTER)


def selection_score(task_or_metric: str, metrics: dict[str, float]) -> float:
    """The dev-selection score, higher is better: the task's metric (:data:`TASK_METRIC`) or the named
    metric, negated when lower is better (−WER for ASR and TTS, BLEU for SQA/AST, −NLL)."""
    name = TASK_METRIC.get(task_or_metric, task_or_metric)
    return -metrics[name] if lower_is_better(name) else metrics[name]
