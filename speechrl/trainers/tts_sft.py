"""Supervised training for TTS RL: the TTS LM (text → speech tokens) and the Token2Text reward model
(speech tokens → text), both trained to their best dev NLL by :func:`speechrl.trainers.sft.train_supervised`
(resumable, cached once finished)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from speechrl.runlog import MetricsLogger
from speechrl.speech.units import Units
from speechrl.trainers.sft import SFTConfig, train_supervised

__all__ = ["TTSExample", "tts_examples", "tts_nll", "token2text_nll", "train_tts_lm", "train_token2text"]


@dataclass
class TTSExample:
    """One utterance for TTS: its text, ground-truth units (with durations), length and speed."""

    id: str
    text: str
    units: Units
    seconds: float
    speed: float = 1.0


def tts_examples(rows: Sequence[dict[str, Any]], feats: dict[str, dict[str, Any]]) -> list[TTSExample]:
    """Manifest rows + cached unit features (:func:`speechrl.data.features.features`, kind ``units``)."""
    out = []
    for r in rows:
        f = feats.get(r["id"])
        if f is None:
            continue
        units = Units([int(i) for i in f["ids"]], [int(d) for d in f["durations"]], "phoneme", 50.0)
        out.append(TTSExample(r["id"], r["text"], units, float(r.get("duration", 0.0)), float(r.get("speed", 1.0))))
    return out


def _module(model: Any) -> Any:
    """The model itself, or the module inside accelerate's DDP wrapper (whose forward must be the one
    called in training: it is what synchronises the gradients)."""
    return getattr(model, "module", model)


def tts_nll(model: Any, batch: Sequence[TTSExample], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL per speech token of the ground-truth tokens (+ EOS) given the text, number of tokens);
    ``model`` may be DDP-wrapped."""
    inner = _module(model)
    ids, mask = inner.target_tokens([e.units for e in batch], max_tokens)
    logps = model(inner.encode([e.text for e in batch]), ids, mask)
    return -(logps * mask).sum() / mask.sum(), mask.sum()


def token2text_nll(model: Any, batch: Sequence[TTSExample], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean NLL per text token given the ground-truth speech tokens, number of text tokens), plus the
    rate head's cross-entropy on the utterance's speed class when the model has one; ``model`` may be
    DDP-wrapped."""
    inner = _module(model)
    ids, mask = _unit_tokens(inner.vocab, [e.units for e in batch], max_tokens, inner.device)
    text_ids, text_mask = inner.text_targets([e.text for e in batch])
    if inner.rate_head is None:
        return -model(ids, mask, text_ids, text_mask).sum() / text_mask.sum(), text_mask.sum()
    logprob, rate_logits = model(ids, mask, text_ids, text_mask, return_rate_logits=True)
    target = torch.tensor([inner.rate_class(e.speed) for e in batch], device=rate_logits.device)
    return (-logprob.sum() / text_mask.sum() + torch.nn.functional.cross_entropy(rate_logits, target),
            text_mask.sum())


def _unit_tokens(vocab: Any, units: Sequence[Units], max_tokens: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [vocab.encode(u)[:max_tokens] or [0] for u in units]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1.0
    return ids.to(device), mask.to(device)


def unit_tokens(vocab: Any, units: Sequence[Units], max_tokens: int = 96,
                device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth speech tokens without EOS, right-padded, with their mask (Token2Text inputs)."""
    return _unit_tokens(vocab, units, max_tokens, device)


def _freeze_text_embeddings(model: torch.nn.Module, embeddings: torch.nn.Module, train: bool) -> None:
    model.requires_grad_(True)
    embeddings.requires_grad_(train)


def train_tts_lm(model: Any, train: Sequence[TTSExample], dev: Sequence[TTSExample], cfg: SFTConfig,
                 out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "sft") -> dict[str, Any]:
    """SFT of the TTS LM on (text → ground-truth speech tokens), to its best dev NLL."""
    _freeze_text_embeddings(model, model.text_embeddings(), cfg.train_embeddings)
    return train_supervised(model, train, dev, lambda m, b: tts_nll(m, b, cfg.max_tokens), model.new_parameters(),
                            cfg, out_dir, logger, stage)


def train_token2text(model: Any, train: Sequence[TTSExample], dev: Sequence[TTSExample], cfg: SFTConfig,
                     out_dir: str | Path, logger: MetricsLogger | None = None,
                     stage: str = "token2text") -> dict[str, Any]:
    """Token2Text on (ground-truth speech tokens → text), to its best dev NLL; frozen afterwards."""
    _freeze_text_embeddings(model, model.lm.get_input_embeddings(), cfg.train_embeddings)
    new = list(model.unit_embed.parameters()) + (list(model.rate_head.parameters()) if model.rate_head else [])
    result = train_supervised(model, train, dev, lambda m, b: token2text_nll(m, b, cfg.max_tokens),
                              new, cfg, out_dir, logger, stage)
    model.eval().requires_grad_(False)
    return result
