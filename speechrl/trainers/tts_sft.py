"""Supervised training for TTS RL: the TTS LM (text → speech tokens) and the Token2Text reward model
(speech tokens → text), both trained to their best dev score.

setup → loop (teacher-forced NLL; dev score every ``eval_every`` steps, best weights in ``<out>/best``,
early stop after ``patience`` evaluations without improvement or at a wall-time budget) → restore the
best weights. Resumable from ``checkpoint_every`` checkpoints; a finished stage is cached
(``result.json``), as :mod:`speechrl.trainers.sft`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.speech.units import Units
from speechrl.trainers.common import make_accelerator, make_optimizer, mean_over_ranks, rank_batch

__all__ = ["TTSExample", "tts_examples", "SupervisedConfig", "train_supervised", "tts_nll", "token2text_nll",
           "train_tts_lm", "train_token2text"]


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


@dataclass
class SupervisedConfig:
    lr: float = doc("learning rate of the pretrained LM layers", 5e-4)
    new_lr: float = doc("learning rate of the new speech embeddings and heads", 2e-3)
    batch_size: int = doc("examples per step", 16)
    max_steps: int = doc("upper bound on steps", 800)
    warmup_steps: int = doc("linear warm-up steps", 50)
    eval_every: int = doc("evaluate on dev every N steps", 100)
    patience: int = doc("stop after this many dev evaluations without improvement", 2)
    dev_examples: int = doc("dev examples used for model selection", 64)
    max_tokens: int = doc("speech-token cap per utterance (targets)", 96)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 100)
    time_budget_s: float = doc("stop after this many seconds of training (0: no budget)", 0.0)
    train_text_embeddings: bool = doc("also train the text LM's token embeddings (slower)", False)
    seed: int = doc("seed for batch order and initialisation", 0)


def _module(model: Any) -> Any:
    """The model itself, or the module inside accelerate's DDP wrapper (whose forward must be the one
    called in training: it is what synchronises the gradients)."""
    return getattr(model, "module", model)


def tts_nll(model: Any, batch: Sequence[TTSExample], max_tokens: int) -> torch.Tensor:
    """Mean NLL per speech token of the ground-truth tokens (+ EOS) given the text (``model`` may be
    DDP-wrapped)."""
    inner = _module(model)
    ids, mask = inner.target_tokens([e.units for e in batch], max_tokens)
    logps = model(inner.encode([e.text for e in batch]), ids, mask)
    return -(logps * mask).sum() / mask.sum()


def token2text_nll(model: Any, batch: Sequence[TTSExample], max_tokens: int) -> torch.Tensor:
    """Mean NLL per text token given the ground-truth speech tokens (+ the rate head's cross-entropy
    on the utterance's speed class when the model has one; ``model`` may be DDP-wrapped)."""
    inner = _module(model)
    ids, mask = _unit_tokens(inner.vocab, [e.units for e in batch], max_tokens, inner.device)
    text_ids, text_mask = inner.text_targets([e.text for e in batch])
    if inner.rate_head is None:
        return -model(ids, mask, text_ids, text_mask).sum() / text_mask.sum()
    logprob, rate_logits = model(ids, mask, text_ids, text_mask, return_rate_logits=True)
    target = torch.tensor([inner.rate_class(e.speed) for e in batch], device=rate_logits.device)
    return -logprob.sum() / text_mask.sum() + torch.nn.functional.cross_entropy(rate_logits, target)


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


@torch.no_grad()
def mean_nll(model: Any, examples: Sequence[TTSExample], loss: Callable, batch_size: int = 32) -> float:
    """Example-weighted mean of a batch loss over ``examples`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        total += float(loss(model, chunk)) * len(chunk)
    model.train(was_training)
    return total / max(1, len(examples))


def train_supervised(model: torch.nn.Module, train: Sequence[Any], dev: Sequence[Any], loss: Callable,
                     new_params: Sequence[torch.nn.Parameter], cfg: SupervisedConfig, out_dir: str | Path,
                     logger: MetricsLogger | None = None, stage: str = "sft") -> dict[str, Any]:
    """Minimise ``loss(model, batch)``; model selection by ``−mean dev loss``. ``new_params`` get
    ``cfg.new_lr``, the other trainable parameters ``cfg.lr``. Returns
    ``{best_score, best_step, steps, train_s, step_s}``; resumable; cached once finished."""
    out_dir = Path(out_dir)
    best_path = out_dir / "best" / "model.safetensors"
    if (out_dir / "result.json").is_file():
        checkpoint.load_weights(best_path, model)
        return read_json(out_dir / "result.json")
    accelerator = make_accelerator(cfg.seed)
    new_ids = {id(p) for p in new_params}
    pretrained = [p for p in model.parameters() if p.requires_grad and id(p) not in new_ids]
    optimizer, scheduler = make_optimizer([{"params": list(new_params), "lr": cfg.new_lr},
                                           {"params": pretrained, "lr": cfg.lr}], cfg.max_steps, cfg.warmup_steps)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    model = accelerator.unwrap_model(wrapped)
    dev = list(dev[: cfg.dev_examples])
    state = {"best_score": None, "best_step": -1, "bad_evals": 0, "train_s": 0.0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, model, optimizer, scheduler)
        step, state = restored["step"], restored["state"]

    def evaluate_dev() -> None:
        dev_loss = mean_nll(model, dev, loss)
        if state["best_score"] is None or -dev_loss > state["best_score"]:
            state.update(best_score=-dev_loss, best_step=step, bad_evals=0)
            checkpoint.save_weights(best_path, model)
        else:
            state["bad_evals"] += 1
        if logger:
            logger.log({"dev_nll": dev_loss}, step=step, stage=stage)

    if state["best_score"] is None:
        evaluate_dev()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=stage, unit="step")
    model.train()
    while step < cfg.max_steps and state["bad_evals"] < cfg.patience:
        if cfg.time_budget_s and state["train_s"] >= cfg.time_budget_s:
            break
        t0 = time.time()
        # each rank's token-mean loss on its share, DDP-averaged: the global token mean up to the shares'
        # token counts (exact when they match)
        batch = rank_batch(train, step, cfg.batch_size, cfg.seed)
        value = loss(wrapped, batch)  # through the wrapper's forward: DDP synchronises the gradients
        accelerator.backward(value)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        state["train_s"] += time.time() - t0
        bar.update(1)
        logged = mean_over_ranks(accelerator, {"loss": value.item()})
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if logger:
            logger.log({**logged, "lr": scheduler.get_last_lr()[-1]}, step=step, stage=stage)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, model, optimizer, scheduler, state)
    bar.close()
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if state["best_step"] != step and best_path.is_file():
        checkpoint.load_weights(best_path, model)
    result = {"best_score": state["best_score"], "best_step": state["best_step"], "steps": step,
              "train_s": round(state["train_s"], 1), "step_s": round(state["train_s"] / max(1, step), 4)}
    write_json(out_dir / "result.json", result)
    return result


def _freeze_text_embeddings(model: torch.nn.Module, embeddings: torch.nn.Module, train: bool) -> None:
    model.requires_grad_(True)
    embeddings.requires_grad_(train)


def train_tts_lm(model: Any, train: Sequence[TTSExample], dev: Sequence[TTSExample], cfg: SupervisedConfig,
                 out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "sft") -> dict[str, Any]:
    """SFT of the TTS LM on (text → ground-truth speech tokens), to its best dev NLL."""
    _freeze_text_embeddings(model, model.text_embeddings(), cfg.train_text_embeddings)
    new = list(model.speech_embed.parameters()) + list(model.speech_head.parameters())
    return train_supervised(model, train, dev, lambda m, b: tts_nll(m, b, cfg.max_tokens), new, cfg, out_dir,
                            logger, stage)


def train_token2text(model: Any, train: Sequence[TTSExample], dev: Sequence[TTSExample], cfg: SupervisedConfig,
                     out_dir: str | Path, logger: MetricsLogger | None = None,
                     stage: str = "token2text") -> dict[str, Any]:
    """Token2Text on (ground-truth speech tokens → text), to its best dev NLL; frozen afterwards."""
    _freeze_text_embeddings(model, model.lm.get_input_embeddings(), cfg.train_text_embeddings)
    new = list(model.unit_embed.parameters()) + (list(model.rate_head.parameters()) if model.rate_head else [])
    result = train_supervised(model, train, dev, lambda m, b: token2text_nll(m, b, cfg.max_tokens),
                              new, cfg, out_dir, logger, stage)
    model.eval().requires_grad_(False)
    return result
