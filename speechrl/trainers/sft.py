"""Supervised training to the best dev score: :func:`train_supervised`, the one loop behind the speech
policy's SFT (:func:`train_sft`, the RL baseline), the TTS LM / Token2Text training
(:mod:`speechrl.trainers.tts_sft`) and the unit LM's next-unit pretraining
(:mod:`speechrl.trainers.unit_lm`).

setup → loop (a batch loss; dev evaluation every ``eval_every`` steps, best weights kept in
``<out>/best``, early stop after ``patience`` evaluations without improvement, or a wall-time budget)
→ the stopping point evaluated too → restore the best weights (no dev set: the last weights).
Checkpoints every ``checkpoint_every`` steps make the run resumable: a restarted call continues from
the latest one.

Under ``accelerate launch`` each rank takes its share of every global batch (``batch_size`` examples
in all), the rank's mean loss is weighted by :func:`~speechrl.trainers.common.rank_weight` (DDP's
gradient average then equals the global batch's mean), logged values are reduced over the ranks,
every rank evaluates the same dev set (same model selection everywhere), and rank 0 alone writes
checkpoints and the log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import torch
from tqdm import tqdm

from speechrl import checkpoint
from speechrl.config import doc
from speechrl.data.tasks import Example
from speechrl.eval.metrics import selection_score
from speechrl.eval.speech_tasks import evaluate, prompt_batch
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.common import (make_accelerator, make_optimizer, mean_over_ranks, rank_batch, rank_weight,
                                     reference_tokens)


@dataclass
class SFTConfig:
    """Supervised training of a pretrained LM with new parts: the speech policy's SFT, the TTS LM and the
    Token2Text reward model (their recipes set their own defaults)."""

    lr: float = doc("learning rate of the pretrained LM's trainable parameters", 1e-4, ge=0)
    new_lr: float = doc("learning rate of the parts trained from scratch (the audio front end; speech-token "
                        "embeddings and heads)", 1e-3, ge=0)
    batch_size: int = doc("examples per step", 16, ge=1)
    max_steps: int = doc("upper bound on steps", 1500, ge=0)
    warmup_steps: int = doc("linear warm-up steps", 30, ge=0)
    schedule: Literal["linear", "constant"] = doc("the learning rate after the warm-up: 'linear' decays to 0 at "
                                                  "max_steps; 'constant' holds it (training a time budget ends)",
                                                  "linear")
    weight_decay: float = doc("AdamW weight decay", 0.0, ge=0)
    eval_every: int = doc("evaluate on dev every N steps (and where training stops)", 100, ge=1)
    patience: int = doc("stop after this many dev evaluations without improvement (0: never)", 3, ge=0)
    dev_examples: int = doc("dev examples used for model selection (0: all)", 96, ge=0)
    max_tokens: int = doc("target length cap in tokens (a speech policy's completions, also its decoding cap in "
                          "dev evaluation; a TTS LM's or Token2Text's speech tokens; a unit LM's training "
                          "segments, BOS included: longer sequences are cut into consecutive chunks)", 40, ge=1)
    checkpoint_every: int = doc("write a resumable checkpoint every N steps", 100, ge=1, affects_results=False)
    time_budget_s: float = doc("stop after this many seconds of training (0: no budget)", 0.0, ge=0)
    train_embeddings: bool = doc("also train the text LM's token embeddings (off is ≈2× faster on CPU)", False)
    seed: int = doc("seed for batch order and initialisation", 0)


def sft_nll(model: Any, policy: Any, examples: list[Example], feats: dict, max_tokens: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, number) of the reference answers' completion tokens. ``model`` is ``policy`` as
    prepared by accelerate (its forward is ``completion_logps``); ``policy`` the unwrapped module."""
    ids, mask = reference_tokens(policy, [e.reference for e in examples], max_tokens)
    ids, mask = ids.to(policy.lm.device), mask.to(policy.lm.device)
    logps = model(policy.encode(prompt_batch(examples, feats)), ids, mask)
    return -(logps * mask).sum(), mask.sum()


LossFn = Callable[[torch.nn.Module, Sequence[Any]], tuple[torch.Tensor, torch.Tensor]]
DevScoreFn = Callable[[torch.nn.Module, Sequence[Any]], tuple[float, dict[str, float]]]


@torch.no_grad()
def mean_dev_loss(model: torch.nn.Module, dev: Sequence[Any], loss: LossFn, batch_size: int = 32
                  ) -> tuple[float, dict[str, float]]:
    """(−mean loss, ``{"nll": mean loss}``) over ``dev``, each batch weighted by its item count (eval
    mode): the default dev score of :func:`train_supervised`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for i in range(0, len(dev), batch_size):
        mean, n = loss(model, dev[i:i + batch_size])
        total, count = total + float(mean) * float(n), count + float(n)
    model.train(was_training)
    metrics = {"nll": total / max(count, 1e-12)}
    return selection_score("nll", metrics), metrics


def train_supervised(model: torch.nn.Module, train: Sequence[Any], dev: Sequence[Any], loss: LossFn,
                     new_params: Sequence[torch.nn.Parameter], cfg: SFTConfig, out_dir: str | Path,
                     logger: MetricsLogger | None = None, stage: str = "sft",
                     dev_score: DevScoreFn | None = None,
                     budget_s: Callable[[], float | None] | None = None) -> dict[str, Any]:
    """Minimise ``loss(model, batch) → (mean over the batch's items, number of items)`` in place;
    model selection by ``dev_score(model, dev) → (score, metrics to log)``, higher is better (default:
    :func:`mean_dev_loss`). ``new_params`` get ``cfg.new_lr``, the other trainable parameters
    ``cfg.lr``. Returns ``{best_score, start_score, best_step, steps, train_s, step_s}`` (scores None
    without a dev set); resumable; cached once finished (``result.json``). ``budget_s``, asked before every
    step, replaces ``cfg.time_budget_s``: the seconds of training allowed, None while not known yet (a
    control trained beside the run whose time it gets, :mod:`speechrl.pipelines.speech_grpo`)."""
    out_dir = Path(out_dir)
    best_path = out_dir / "best" / "model.safetensors"
    if (out_dir / "result.json").is_file():  # finished before: reuse (the stage is cached)
        checkpoint.load_weights(best_path, model)
        return read_json(out_dir / "result.json")
    accelerator = make_accelerator(cfg.seed)
    new_ids = {id(p) for p in new_params}
    pretrained = [p for p in model.parameters() if p.requires_grad and id(p) not in new_ids]
    optimizer, scheduler = make_optimizer([{"params": list(new_params), "lr": cfg.new_lr},
                                           {"params": pretrained, "lr": cfg.lr}],
                                          cfg.max_steps, cfg.warmup_steps, cfg.weight_decay, cfg.schedule)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    model = accelerator.unwrap_model(wrapped)
    dev = list(dev[: cfg.dev_examples or None])
    state = {"best_score": None, "start_score": None, "best_step": -1, "bad_evals": 0, "evaluated_step": -1,
             "train_s": 0.0}
    step = 0
    if (ckpt := checkpoint.latest(out_dir)) is not None:
        restored = checkpoint.load(ckpt, model, optimizer, scheduler)
        step, state = restored["step"], {**state, **restored["state"]}

    def evaluate_dev() -> None:
        if not dev:
            return
        s, metrics = (dev_score or (lambda m, d: mean_dev_loss(m, d, loss)))(model, dev)
        state["evaluated_step"] = step
        if state["start_score"] is None:
            state["start_score"] = s
        if state["best_score"] is None or s > state["best_score"]:
            state.update(best_score=s, best_step=step, bad_evals=0)
            checkpoint.save_weights(best_path, model)
        else:
            state["bad_evals"] += 1
        if logger:
            logger.log({f"dev_{k}": v for k, v in metrics.items()}, step=step, stage=stage)

    if state["best_score"] is None:
        evaluate_dev()  # the starting point competes too (matters for continued training)
    # a time-budgeted run (max_steps only a cap) shows its count and rate, not an ETA for the cap
    timed = budget_s is not None or bool(cfg.time_budget_s)
    budget_s = budget_s or (lambda: cfg.time_budget_s or None)
    bar = tqdm(total=None if timed else cfg.max_steps, initial=step, desc=stage, unit="step")
    model.train()
    while step < cfg.max_steps and not (cfg.patience and state["bad_evals"] >= cfg.patience):
        if (limit := budget_s()) is not None and state["train_s"] >= limit:
            break
        t0 = time.time()
        batch = rank_batch(train, step, cfg.batch_size, cfg.seed)
        mean, count = loss(wrapped, batch)  # through the wrapper's forward: DDP synchronises the gradients
        value = mean * rank_weight(accelerator, count)  # DDP's average = the global batch's mean
        accelerator.backward(value)
        logged = mean_over_ranks(accelerator, {"loss": value.item(), "tokens": float(count)})
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        state["train_s"] += time.time() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if logger:
            logger.log({"loss": logged["loss"], "tokens": round(logged["tokens"] * accelerator.num_processes),
                        "step_s": time.time() - t0, "lr": scheduler.get_last_lr()[-1]}, step=step, stage=stage)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            evaluate_dev()
        if step % cfg.checkpoint_every == 0:
            checkpoint.save(out_dir, step, model, optimizer, scheduler, state)
    bar.close()
    if not dev:  # nothing to select on: the last weights are the result
        state["best_step"] = step
        checkpoint.save_weights(best_path, model)
    elif state["evaluated_step"] != step:
        evaluate_dev()  # stopped by the budget between evaluations: the last weights compete
    accelerator.wait_for_everyone()  # the best weights are on disk before any rank reloads them
    if state["best_step"] != step:
        checkpoint.load_weights(best_path, model)
    result = {"best_score": state["best_score"], "start_score": state["start_score"], "best_step": state["best_step"],
              "steps": step, "train_s": round(state["train_s"], 1), "step_s": round(state["train_s"] / max(1, step), 4)}
    write_json(out_dir / "result.json", result)
    return result


def train_sft(policy: Any, train: list[Example], dev: list[Example], feats: dict, task: str, cfg: SFTConfig,
              out_dir: str | Path, logger: MetricsLogger | None = None, stage: str = "sft",
              budget_s: Callable[[], float | None] | None = None) -> dict[str, Any]:
    """SFT of a speech policy on the reference completions, to its best dev task score (WER, BLEU…: greedy
    decoding); the new parts (:func:`new_parameters`) train at ``new_lr``. Returns :func:`train_supervised`'s
    result (``budget_s``: its time budget, asked before every step)."""
    policy.lm.get_input_embeddings().requires_grad_(cfg.train_embeddings)

    def loss(model: torch.nn.Module, batch: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        nll, tokens = sft_nll(model, policy, batch, feats, cfg.max_tokens)
        return nll / tokens, tokens

    def dev_score(_model: torch.nn.Module, dev: Sequence[Example]) -> tuple[float, dict[str, float]]:
        metrics, _ = evaluate(policy, list(dev), feats, task, cfg.max_tokens, semantic=False, desc=f"{stage} dev")
        return selection_score(task, metrics), metrics

    return train_supervised(policy, train, dev, loss, new_parameters(policy), cfg, out_dir, logger, stage, dev_score,
                            budget_s)


def new_parameters(policy: Any) -> list[torch.nn.Parameter]:
    """The trainable parameters no pretraining gave the policy (they train at ``new_lr``): our SpeechLM's
    audio front end (its projector, or the whole encoder where it is learnt here); none for a pretrained
    speech model (everything there trains at ``lr``)."""
    front = getattr(policy, "front_end", None)
    if front is None:
        return []
    params = front.new_parameters() if hasattr(front, "new_parameters") else front.parameters()
    return [p for p in params if p.requires_grad]
