"""Rewards: one signature for all, TRL-compatible.

    reward(prompts, completions, **columns) -> list[float]

``columns`` are per-sample lists from the dataset (``reference=[...]``, ``keywords=[[...], ...]``,
``language=[...]``; ``references=[[...], ...]``, each sample's accepted wordings, which the
reference-overlap rewards score against instead of ``reference`` when given); extra keyword arguments
are ignored. Every reward has a ``name`` and a
documented ``value_range``; :data:`REWARDS` lists them, :func:`make_reward` combines them with
weights into a :class:`WeightedReward` that keeps each reward's values for logging. A reward returns
None for a sample it has nothing to judge; :class:`WeightedReward` then leaves that term out of the
sample's total.

| name | what | range |
|---|---|---|
| ``bleu`` | sentence BLEU / 100 (sacreBLEU, 13a, exp smoothing, effective order) | [0, 1] |
| ``rouge1``, ``rouge2``, ``rouge_l`` | ROUGE F (rouge-score) on normalised words | [0, 1] |
| ``meteor`` | METEOR, exact + stem matching (no WordNet synonyms offline) | [0, 1] |
| ``accuracy_wer``, ``accuracy_cer`` | max(1 − WER/CER, −1) on normalised text | [−1, 1] |
| ``tanh_wer`` | 1 − tanh(3·WER) (CosyVoice) | [0, 1] |
| ``keyword_score`` | (keyword precision + recall) / 2; None (not applicable) without keywords | [0, 1] |
| ``hallucination`` | −1 on repetition / unsupported content / wrong language, else 0 | [−1, 0] |
| ``embedding_similarity`` | cosine of MiniLM sentence embeddings | [−1, 1] |
| ``tts_duration``, ``tts_diversity`` | TTS R2/R3 over a group (:mod:`speechrl.rewards.tts`) | (−∞, 0], [0, 1] |
"""

from speechrl.rewards.asr import (
    ACCURACY_FLOOR,
    Hallucination,
    accuracy_cer,
    accuracy_wer,
    detect_language,
    hallucination,
    has_unsupported_content,
    is_repetitive,
    is_wrong_language,
    keyword_precision_recall,
    keyword_score,
    tanh_wer,
)
from speechrl.rewards.combine import REWARDS, WeightedReward, make_reward
from speechrl.rewards.embedding import (
    EmbeddingSimilarity,
    embedding_similarity,
    load_sentence_encoder,
)
from speechrl.rewards.text_metrics import bleu, meteor, rouge1, rouge2, rouge_l
from speechrl.rewards.tts import TTS_REWARDS, UnitRenderer, tts_diversity, tts_duration

REWARDS.update(TTS_REWARDS)

__all__ = [
    "ACCURACY_FLOOR",
    "REWARDS",
    "EmbeddingSimilarity",
    "Hallucination",
    "WeightedReward",
    "accuracy_cer",
    "accuracy_wer",
    "bleu",
    "detect_language",
    "embedding_similarity",
    "hallucination",
    "has_unsupported_content",
    "is_repetitive",
    "is_wrong_language",
    "keyword_precision_recall",
    "keyword_score",
    "load_sentence_encoder",
    "make_reward",
    "meteor",
    "rouge1",
    "rouge2",
    "rouge_l",
    "tanh_wer",
    "UnitRenderer",
    "tts_diversity",
    "tts_duration",
]
