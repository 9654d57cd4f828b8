"""Align-SLM (arXiv 2411.01834): AI feedback on self-generated continuations → preference pairs → DPO, and the
likelihood minimal-pair benchmarks it is evaluated on.

judge.py (1–5 rubric judges), feedback.py (auto-BLEU, perplexity), pairs.py (preference pairs),
minimal_pairs.py (sWUGGY/sBLIMP/StoryCloze-like sets and accuracy), zerospeech.py (the real sets).
"""
