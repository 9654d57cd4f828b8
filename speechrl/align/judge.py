"""AI-feedback judges: rate a continuation of a prompt from 1 to 5 with Align-SLM's rubric (arXiv 2411.01834).

Both judges take the transcripts of a prompt and of a continuation, fill in :data:`RUBRIC`, and
implement one call::

    judge.score(prompts: list[str], continuations: list[str]) -> list[float | None]

``None`` means *unscored* (the judge gave no usable rating); callers must not treat it as a low score.

:class:`LocalJudge` — a local Hugging Face causal LM (default: the offline SmolLM2-135M-Instruct).

* ``mode="expected"`` (default): the rubric goes into the model's chat template as the user turn; the
  assistant turn is then started with :data:`ANSWER_PREFIX`, so the prompt ends with exactly::

      <|im_start|>assistant\\nThe final answer is $\\boxed{

  and the next token is the score. With ``p_k`` the softmax of the next-token logits restricted to
  the tokens ``"1"`` … ``"5"``, the score is the expected rating ``Σ_k k · p_k`` ∈ [1, 5]. The
  rubric's "First: briefly analyze" step is skipped: a 135M model's free-text analysis adds noise,
  the probabilities of the five answers are stable. Batched with left padding (position
  ids from the attention mask, so a padded row scores like an unpadded one), no gradients.
* ``mode="likelihood"``: no rubric; the judge's conditional likelihood of the continuation given the
  prompt, NLL/token ``ℓ`` (:func:`speechrl.align.feedback.continuation_nll`), mapped linearly onto the
  rubric's scale: ``score = clip(5 − 4·(ℓ − ℓ_best)/(ℓ_worst − ℓ_best), 1, 5)``. Why: SmolLM2-135M cannot apply the rubric — measured on 12 grammar stories, its expected
  rubric score for the true next sentence (3.52) and for random words (3.50) differ by 0.02, the
  true one higher for only 7 of 12 prompts, and few-shot examples made it worse — while its
  NLL/token separates them clearly: true next sentence 3.75, a sentence from another story 4.20,
  the true sentence shuffled 8.18, random corpus words 10.25. The anchors (ℓ_best 3.5 → 5,
  ℓ_worst 9.5 → 1) come from those measurements. It is the offline default of the Align-SLM
  recipe; a capable instruct model (``"expected"``/``"boxed"``, or :class:`HTTPJudge`) applies the
  rubric itself. Offline, ``model="qwen2.5-coder-1.5b"`` (the optional ``judge`` extra) does in
  expected mode — it ranked a story's true ending above another story's ending and above its own
  shuffled words for 30 of 30 stories — at ≈15 s a judgement on one core, too slow to be the default
  (``scripts/judge_separation.py``; docs/results.md, 2026-12-05).
* ``mode="boxed"``: greedy generation from the plain assistant turn, score parsed from the last
  ``\\boxed{d}`` (:func:`parse_boxed_score`); ``None`` when the text has none in 1..5.

:class:`HTTPJudge` — an OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI …) via
``/chat/completions`` or ``/completions``, with the score parsed from ``\\boxed{d}``. Requests run on
a thread pool; each has a timeout and bounded retries with exponential backoff (connection errors,
timeouts, HTTP 429 and 5xx). A sample whose request still fails, or whose reply holds no valid
score, is ``None``; the counts are in ``judge.last_stats`` and logged as a warning.

:func:`make_judge` builds either from a :class:`JudgeConfig`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Protocol, Sequence

import torch

from speechrl.config import ConfigError, check_model_name, doc
from speechrl.http_client import post_with_retries

__all__ = [
    "RUBRIC",
    "ANSWER_PREFIX",
    "SCORES",
    "Judge",
    "JudgeStats",
    "LocalJudge",
    "HTTPJudge",
    "JudgeConfig",
    "make_judge",
    "judge_prompt",
    "parse_boxed_score",
    "check_inputs",
    "mean_score",
]

log = logging.getLogger(__name__)

SCORES = (1, 2, 3, 4, 5)

# Verbatim: the 1–5 rubric used for GPT-4o evaluation, following Align-SLM's setup (arXiv 2411.01834).
# Literal braces are doubled for str.format; {prompt} and {continuation} are the slots.
RUBRIC = (
    'The task is evaluating the relevance and likelihood of the predicted text continuation, given the '
    'text prompt. You should also consider whether the meaning of the text continuation is making sense. '
    'The text prompt is: "{prompt}", and the text continuation is :"{continuation}". You must give an '
    'overall rating from 1 to 5. The rating guideline is as below: 1: The text continuation is very '
    'unlikely and irrelevant to the text prompt. 2: The text continuation is unlikely and marginally '
    'relevant to the text prompt. 3: The text continuation is moderately likely and relevant to the text '
    'prompt. 4: The text continuation is likely and relevant to the text prompt. 5: The text continuation '
    'is very likely and highly relevant. You should take the following steps to provide the score: First: '
    'briefly analyze the sample with the above definition. Second: MUST follow the output format as: "The '
    'final answer is $\\boxed{{x}}$". Where x is the score you are giving.'
)

# What the assistant turn starts with in LocalJudge's "expected" mode: the next token is the score.
ANSWER_PREFIX = "The final answer is $\\boxed{"

_BOXED = re.compile(r"\\boxed\{\s*([^{}]*?)\s*\}")


def judge_prompt(prompt: str, continuation: str) -> str:
    """The rubric with ``prompt`` and ``continuation`` filled in (no further substitution inside them)."""
    return RUBRIC.format(prompt=prompt.strip(), continuation=continuation.strip())


def parse_boxed_score(text: str) -> int | None:
    """The score in the last ``\\boxed{…}`` of ``text`` if it is a single digit 1..5, else ``None``.

    The last box counts because a model may first restate the format (``$\\boxed{x}$``) and then
    answer. ``\\boxed{4}`` → 4; ``\\boxed{ 2 }`` → 2; ``\\boxed{x}``, ``\\boxed{7}``, ``\\boxed{3.5}``,
    ``\\boxed{10}`` or no box → ``None``.
    """
    if not isinstance(text, str):
        return None
    boxes = _BOXED.findall(text)
    if not boxes:
        return None
    last = boxes[-1]
    return int(last) if re.fullmatch(r"[1-5]", last) else None


def check_inputs(prompts: Sequence[str], continuations: Sequence[str]) -> None:
    """Raise ``ValueError`` unless both are equally long lists of strings with non-empty continuations.

    An empty continuation cannot be rated; a pipeline decides itself what an empty transcript is
    worth (e.g. drop it, or reject it outright) before calling a judge.
    """
    if isinstance(prompts, str) or isinstance(continuations, str):
        raise TypeError("prompts and continuations must be lists of strings, not a single string")
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if not isinstance(p, str) or not isinstance(c, str):
            raise TypeError(f"sample {i}: prompt and continuation must be str, got "
                            f"{type(p).__name__} and {type(c).__name__}")
        if not c.strip():
            raise ValueError(f"sample {i}: empty continuation (nothing to rate)")


class Judge(Protocol):
    """Anything that rates continuations of prompts from 1 to 5 (``None`` = unscored)."""

    def score(self, prompts: list[str], continuations: list[str]) -> list[float | None]: ...


@dataclass
class JudgeStats:
    """What the last ``score`` call did: samples, how many came back unscored, and why."""

    samples: int = 0
    unscored: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def add_failure(self, reason: str) -> None:
        self.unscored += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1


def _report(name: str, stats: JudgeStats) -> None:
    if stats.unscored:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(stats.failures.items()))
        log.warning("%s: %d of %d samples unscored (%s)", name, stats.unscored, stats.samples, why)


# ------------------------------------------------------------------------------------ local judge


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Dropout off while judging; the model's own train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class LocalJudge:
    """1–5 judge over a local causal LM with a chat template (see the module docstring).

    model: a loaded ``PreTrainedModel`` or a name for :func:`speechrl.models.hub.load_causal_lm`
        (``"smollm2-135m"`` = the offline SmolLM2-135M-Instruct, a hub id, a local folder).
    tokenizer: required with a loaded model; loaded by name otherwise.
    mode: ``"expected"`` (expected score from the next-token probabilities) or ``"boxed"``
        (generate, parse ``\\boxed{d}``).
    batch_size: samples per forward pass / generate call.
    max_new_tokens: generation budget in ``"boxed"`` mode.
    """

    def __init__(self, model: Any = "smollm2-135m", tokenizer: Any = None, *,
                 mode: Literal["expected", "boxed", "likelihood"] = "expected", batch_size: int = 8,
                 max_new_tokens: int = 256, nll_anchors: tuple[float, float] = (3.5, 9.5)):
        if mode not in ("expected", "boxed", "likelihood"):
            raise ValueError(f"unknown judge mode {mode!r}; choose 'expected', 'boxed' or 'likelihood'")
        if not nll_anchors[0] < nll_anchors[1]:
            raise ValueError(f"nll_anchors must be (best, worst) with best < worst, got {nll_anchors}")
        self.nll_anchors = tuple(nll_anchors)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, str):
            from speechrl.models.hub import load_causal_lm, load_tokenizer

            tokenizer = tokenizer or load_tokenizer(model)
            model = load_causal_lm(model)
        elif tokenizer is None:
            raise ValueError("LocalJudge needs the tokenizer of a loaded model")
        if tokenizer.pad_token_id is None:
            raise ValueError("the judge tokenizer has no pad token (set tokenizer.pad_token)")
        self.model, self.tokenizer = model, tokenizer
        self.mode, self.batch_size, self.max_new_tokens = mode, batch_size, max_new_tokens
        self.score_token_ids = self._score_tokens() if mode == "expected" else []
        self.last_stats = JudgeStats()

    def _score_tokens(self) -> list[int]:
        ids = []
        for k in SCORES:
            toks = self.tokenizer.encode(str(k), add_special_tokens=False)
            if len(toks) != 1:
                raise ValueError(f"the judge tokenizer splits {str(k)!r} into {len(toks)} tokens; "
                                 "mode='expected' needs one token per score (use mode='boxed')")
            ids.append(toks[0])
        return ids

    def chat_text(self, prompt: str, continuation: str) -> str:
        """The exact text fed to the model: chat template, plus :data:`ANSWER_PREFIX` in expected mode."""
        messages = [{"role": "user", "content": judge_prompt(prompt, continuation)}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + ANSWER_PREFIX if self.mode == "expected" else text

    def score(self, prompts: list[str], continuations: list[str]) -> list[float | None]:
        check_inputs(prompts, continuations)
        self.last_stats = JudgeStats(samples=len(prompts))
        if self.mode == "likelihood":
            return self._likelihood(prompts, continuations)
        texts = [self.chat_text(p, c) for p, c in zip(prompts, continuations)]
        out: list[float | None] = []
        with _eval_mode(self.model):
            for i in range(0, len(texts), self.batch_size):
                batch = texts[i:i + self.batch_size]
                out += self._expected(batch) if self.mode == "expected" else self._boxed(batch)
        _report("LocalJudge", self.last_stats)
        return out

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                             add_special_tokens=False)
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def score_probabilities(self, prompts: list[str], continuations: list[str]) -> torch.Tensor:
        """``[N, 5]`` probabilities of the answers 1..5 (expected mode's distribution)."""
        check_inputs(prompts, continuations)
        if self.mode != "expected":
            raise ValueError("score_probabilities needs mode='expected' (the prompt must end at the score)")
        texts = [self.chat_text(p, c) for p, c in zip(prompts, continuations)]
        with _eval_mode(self.model):
            rows = [self._probs(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        return torch.cat(rows) if rows else torch.zeros(0, len(SCORES))

    @torch.no_grad()
    def _probs(self, texts: list[str]) -> torch.Tensor:
        enc = self._encode(texts)
        mask = enc["attention_mask"]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**enc, position_ids=position_ids).logits[:, -1, :]
        return torch.softmax(logits[:, self.score_token_ids].float(), dim=-1).cpu()

    def _expected(self, texts: list[str]) -> list[float | None]:
        values = torch.tensor(SCORES, dtype=torch.float32)
        return [float(v) for v in self._probs(texts) @ values]

    def _likelihood(self, prompts: list[str], continuations: list[str]) -> list[float | None]:
        from speechrl.align.feedback import continuation_nll

        best, worst = self.nll_anchors
        return [float(min(5.0, max(1.0, 5.0 - 4.0 * (total / n - best) / (worst - best))))
                for total, n in continuation_nll(self.model, self.tokenizer, prompts, continuations,
                                                 batch_size=self.batch_size)]

    @torch.no_grad()
    def _boxed(self, texts: list[str]) -> list[float | None]:
        enc = self._encode(texts)
        pad = self.tokenizer.pad_token_id
        gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=pad, eos_token_id=self.tokenizer.eos_token_id)
        replies = self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out: list[float | None] = []
        for reply in replies:
            value = parse_boxed_score(reply)
            if value is None:
                self.last_stats.add_failure("no_score_in_reply")
            out.append(None if value is None else float(value))
        return out


# ------------------------------------------------------------------------------------- HTTP judge


class HTTPJudge:
    """1–5 judge behind an OpenAI-compatible HTTP endpoint (see the module docstring).

    base_url: the API root including its version, e.g. ``http://localhost:8000/v1``; requests go to
        ``{base_url}/chat/completions`` (endpoint ``"chat"``) or ``{base_url}/completions``.
    model: the model name the server expects in the request body.
    api_key_env: name of the environment variable holding the API key, read at request time and
        sent as ``Authorization: Bearer …``; unset or empty → no header (a local vLLM needs none).
        The key itself is never stored on the object, printed or logged.
    timeout_s: socket timeout of one request (connect, and each read); a sample takes at most
        about ``(max_retries + 1) · timeout_s`` plus the backoff sleeps.
    max_retries: extra tries after a retryable failure (connection refused/reset, timeout, 429, 5xx).
    backoff_s: sleep before retry r (0-based) is ``min(max_backoff_s, backoff_s · 2**r)``.
    concurrency: requests in flight at once (threads).
    max_tokens, temperature: generation settings sent to the server.

    A 200 reply without a valid ``\\boxed{1..5}`` (non-JSON, no choices, no box, out of range) is
    not retried — at temperature 0 it would come back the same — and the sample is ``None``.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 endpoint: Literal["chat", "completions"] = "chat", timeout_s: float = 60.0,
                 max_retries: int = 3, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 concurrency: int = 8, max_tokens: int = 256, temperature: float = 0.0):
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"unknown endpoint {endpoint!r}; choose 'chat' or 'completions'")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0 or concurrency < 1:
            raise ValueError("need timeout_s > 0, max_retries >= 0, backoff_s >= 0, concurrency >= 1")
        self.base_url, self.model, self.api_key_env, self.endpoint = base_url.rstrip("/"), model, api_key_env, endpoint
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.concurrency, self.max_tokens, self.temperature = concurrency, max_tokens, temperature
        self.last_stats = JudgeStats()

    def __repr__(self) -> str:  # never shows the key, only where it comes from
        return (f"HTTPJudge(base_url={self.base_url!r}, model={self.model!r}, endpoint={self.endpoint!r}, "
                f"api_key_env={self.api_key_env!r})")

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"

    def score(self, prompts: list[str], continuations: list[str]) -> list[float | None]:
        check_inputs(prompts, continuations)
        self.last_stats = JudgeStats(samples=len(prompts))
        texts = [judge_prompt(p, c) for p, c in zip(prompts, continuations)]
        if not texts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(texts))) as pool:
            results = list(pool.map(self._score_one, texts))
        out: list[float | None] = []
        for value, retries, failure in results:  # stats are tallied here, in one thread
            self.last_stats.retries += retries
            if failure is not None:
                self.last_stats.add_failure(failure)
            out.append(value)
        _report("HTTPJudge", self.last_stats)
        return out

    def _body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = text + "\n"
        return body

    def _score_one(self, text: str) -> tuple[float | None, int, str | None]:
        """(score or None, retries used, failure reason or None) for one rubric text."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        reply, retries, failure = post_with_retries(
            self.url, json.dumps(self._body(text)).encode("utf-8"), headers, timeout_s=self.timeout_s,
            max_retries=self.max_retries, backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)
        if reply is None:
            return None, retries, failure
        value = self._parse(reply)
        return (None, retries, "bad_response") if value is None else (float(value), retries, None)

    def _parse(self, raw: bytes) -> int | None:
        try:
            reply = json.loads(raw)
            choice = reply["choices"][0]
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return parse_boxed_score(text)


# ----------------------------------------------------------------------------------------- config


@dataclass
class JudgeConfig:
    kind: Literal["local", "http"] = doc("'local': a causal LM in this process; 'http': an "
                                         "OpenAI-compatible server", "local")
    model: str = doc("local: model name or folder ('smollm2-135m' = offline SmolLM2-135M-Instruct; "
                     "'qwen2.5-coder-1.5b' = offline Qwen2.5-Coder-1.5B-Instruct from the judge extra, applies the "
                     "rubric in 'expected' mode, ≈15 s a judgement on one core; a hub id, a save_pretrained "
                     "folder); http: the model name the server serves", "smollm2-135m")
    mode: Literal["expected", "boxed", "likelihood"] = doc(
        "local only: 'expected' = Σ k·p(k) over the next-token probabilities of 1..5; 'boxed' = generate and "
        "parse \\boxed{k}; 'likelihood' = the continuation's NLL/token given the prompt mapped onto 1..5 "
        "(the offline default: SmolLM2-135M cannot apply the rubric, see speechrl.align.judge)", "likelihood")
    nll_best: float = doc("likelihood mode: NLL/token that scores 5", 3.5)
    nll_worst: float = doc("likelihood mode: NLL/token that scores 1", 9.5)
    batch_size: int = doc("local: samples per forward pass", 8, ge=1)
    max_new_tokens: int = doc("generation budget ('boxed' mode; max_tokens of HTTP requests)", 256, ge=1)
    base_url: str = doc("http: API root with version, e.g. http://localhost:8000/v1", "http://localhost:8000/v1")
    endpoint: Literal["chat", "completions"] = doc("http: /chat/completions or /completions", "chat")
    api_key_env: str = doc("http: environment variable holding the API key (never logged); "
                           "unset = no Authorization header", "OPENAI_API_KEY")
    timeout_s: float = doc("http: socket timeout of one request, seconds", 60.0, gt=0)
    max_retries: int = doc("http: retries after a connection error, timeout, 429 or 5xx", 3, ge=0)
    backoff_s: float = doc("http: first retry delay, doubled on each further retry", 1.0, ge=0)
    concurrency: int = doc("http: requests in flight at once", 8, ge=1)
    temperature: float = doc("http: sampling temperature sent to the server", 0.0, ge=0)

    def validate(self) -> None:
        if not self.nll_best < self.nll_worst:
            raise ConfigError(f"nll_best: {self.nll_best:g} must be below nll_worst {self.nll_worst:g}")
        if self.kind == "local":  # an http judge's model is the name the server serves
            check_model_name("model", self.model)


def make_judge(cfg: JudgeConfig, model: Any = None, tokenizer: Any = None) -> Judge:
    """A judge from ``cfg``; ``model``/``tokenizer`` reuse an already loaded local LM."""
    if cfg.kind == "local":
        return LocalJudge(model if model is not None else cfg.model, tokenizer, mode=cfg.mode,
                          batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                          nll_anchors=(cfg.nll_best, cfg.nll_worst))
    if cfg.kind == "http":
        return HTTPJudge(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, endpoint=cfg.endpoint,
                         timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
                         concurrency=cfg.concurrency, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    raise ValueError(f"unknown judge kind {cfg.kind!r}; choose 'local' or 'http'")


def mean_score(scores: Sequence[float | None]) -> float:
    """Mean of the scored samples (``nan`` when none is scored)."""
    vals = [s for s in scores if s is not None]
    return sum(vals) / len(vals) if vals else math.nan
