"""Rewards as a service: score on another process or machine, with the local reward's signature.

Server — ``make_reward(rewards)`` computed in-process, so a heavy reward (``embedding_similarity``)
loads its model once and serves every trainer rank::

    python -m speechrl.rewards.service --rewards '{"bleu": 1.0}' --port 8123 [--host 0.0.0.0]

    POST /score   {"prompts": [...] | null, "completions": [...], "columns": {name: [...]}}
               → {"rewards": [...], "components": {name: [...]},     (NaN is sent as null)
                  "not_applicable": {name: [bool, ...]}}            (the reward returned None there)
    GET  /health → {"status": "ok", "rewards": {name: weight}, "max_batch": N, "requests": k, "samples": m}

A request of more than ``max_batch`` samples is refused (413); malformed JSON, unequal lengths or a
reward that rejects its inputs (say a missing ``reference`` column) is a 400 naming the problem. At
most ``workers`` requests are scored at once, each by its own :class:`WeightedReward`; the rest wait.

Client — :class:`RemoteReward` is a drop-in for a local reward: ``reward(prompts, completions,
**columns) -> list[float]`` and ``.metrics()`` like :class:`WeightedReward`. It splits the samples into
batches of ``batch_size`` and sends ``concurrency`` at once, each with a timeout and bounded retries
(:mod:`speechrl.http_client`). A batch that still fails — server down, too slow, a reply that is not
a valid score list — gives NaN for its samples, which the GRPO trainer masks as missing rewards; a
call therefore never hangs and takes at most about ``ceil(batches / concurrency) · (max_retries + 1)
· timeout_s`` plus the backoff sleeps.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping, Sequence

from speechrl.http_client import post_with_retries
from speechrl.rewards.batch import completion_texts
from speechrl.rewards.combine import WeightedReward, make_reward

__all__ = ["make_server", "serve", "RemoteReward", "RemoteStats", "main"]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ server


class _BadRequest(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


class _Scorer:
    """``workers`` WeightedRewards over the same reward functions; one request holds one at a time."""

    def __init__(self, rewards: Mapping[str, float], max_batch: int, workers: int):
        if max_batch < 1 or workers < 1:
            raise ValueError(f"need max_batch >= 1 and workers >= 1, got {max_batch} and {workers}")
        self.weights, self.max_batch = dict(rewards), max_batch
        self.pool: queue.Queue[WeightedReward] = queue.Queue()
        for _ in range(workers):
            self.pool.put(make_reward(rewards))  # unknown names fail here, before the server starts
        self.lock = threading.Lock()
        self.requests = self.samples = 0

    def score(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("completions"), list):
            raise _BadRequest(400, "body must be a JSON object with a 'completions' list")
        prompts, completions = body.get("prompts"), body["completions"]
        columns = body.get("columns") or {}
        n = len(completions)
        if n > self.max_batch:
            raise _BadRequest(413, f"{n} samples exceed max_batch {self.max_batch}")
        if prompts is not None and (not isinstance(prompts, list) or len(prompts) != n):
            raise _BadRequest(400, f"'prompts' must be null or a list of {n} items")
        if not isinstance(columns, dict):
            raise _BadRequest(400, "'columns' must be an object of per-sample lists")
        reward = self.pool.get()
        try:
            total = reward(prompts, completions, **columns)
            components = {name: _finite_or_none(vals) for name, vals in reward.last_values.items()}
            not_applicable = reward.last_not_applicable
        except (ValueError, TypeError, KeyError) as err:  # inputs the rewards reject: the client's fault
            raise _BadRequest(400, f"{type(err).__name__}: {err}") from None
        finally:
            self.pool.put(reward)
        with self.lock:
            self.requests += 1
            self.samples += n
        return {"rewards": _finite_or_none(total), "components": components, "not_applicable": not_applicable}

    def health(self) -> dict[str, Any]:
        with self.lock:
            return {"status": "ok", "rewards": self.weights, "max_batch": self.max_batch,
                    "requests": self.requests, "samples": self.samples}


class _Handler(BaseHTTPRequestHandler):
    server: "_RewardServer"
    protocol_version = "HTTP/1.1"

    def _reply(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, allow_nan=False).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") == "/health":
            self._reply(200, self.server.scorer.health())
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self._reply(404, {"error": f"no route {self.path}"})
            return
        try:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                raise _BadRequest(400, "body is not JSON") from None
            self._reply(200, self.server.scorer.score(body))
        except _BadRequest as err:
            self._reply(err.code, {"error": str(err)})
        except Exception as err:  # a reward bug: the server stays up, the client may retry
            log.exception("scoring failed")
            self._reply(500, {"error": f"{type(err).__name__}: {err}"})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)


class _RewardServer(ThreadingHTTPServer):
    daemon_threads = True
    scorer: _Scorer


def make_server(rewards: Mapping[str, float], host: str = "127.0.0.1", port: int = 8123, max_batch: int = 1024,
                workers: int = 2) -> ThreadingHTTPServer:
    """A bound, not yet serving reward server (``port=0`` picks a free port: ``server.server_address``)."""
    scorer = _Scorer(rewards, max_batch, workers)
    server = _RewardServer((host, port), _Handler)
    server.scorer = scorer
    return server


def serve(rewards: dict[str, float], host: str = "127.0.0.1", port: int = 8123, max_batch: int = 1024,
          workers: int = 2) -> None:
    """Serve ``make_reward(rewards)`` over HTTP until interrupted (see the module docstring)."""
    server = make_server(rewards, host, port, max_batch, workers)
    bound_host, bound_port = server.server_address[:2]
    print(f"speechrl reward service on http://{bound_host}:{bound_port} rewards={json.dumps(rewards)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ------------------------------------------------------------------------------------------ client


@dataclass
class RemoteStats:
    """What the last call did: samples, batches, retries, and the samples left NaN by failed batches."""

    samples: int = 0
    batches: int = 0
    retries: int = 0
    unscored: int = 0
    failures: dict[str, int] = field(default_factory=dict)


def _slice_columns(columns: Mapping[str, Any], n: int, lo: int, hi: int) -> dict[str, Any]:
    """Per-sample columns cut to ``[lo, hi)``; anything that is not an n-long list is sent whole."""
    return {k: list(v[lo:hi]) if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in columns.items()}


class RemoteReward:
    """A reward computed by a reward service, with a local reward's call signature (module docstring).

    url: the service root, e.g. ``http://reward-host:8123``; batches go to ``{url}/score``.
    timeout_s: socket timeout of one request (connect, and each read).
    max_retries: extra tries of a batch after a connection error, timeout, 429 or 5xx.
    backoff_s, max_backoff_s: sleep before retry r is ``min(max_backoff_s, backoff_s · 2**r)``.
    batch_size: samples per request (keep it ≤ the server's ``max_batch``).
    concurrency: requests in flight at once (threads).

    After a call, like :class:`WeightedReward`: ``last_values`` (each component's raw values),
    ``last_not_applicable``, ``last_total``, ``last_invalid``, ``invalid_total``, :meth:`metrics`; plus ``last_stats``.
    """

    name = "remote_reward"
    __name__ = "remote_reward"

    def __init__(self, url: str, timeout_s: float = 30.0, max_retries: int = 2, batch_size: int = 64,
                 concurrency: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if timeout_s <= 0 or max_retries < 0 or batch_size < 1 or concurrency < 1 or backoff_s < 0:
            raise ValueError("need timeout_s > 0, max_retries >= 0, batch_size >= 1, concurrency >= 1, backoff_s >= 0")
        self.url = url.rstrip("/")
        self.timeout_s, self.max_retries, self.batch_size, self.concurrency = timeout_s, max_retries, batch_size, concurrency
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.last_values: dict[str, list[float]] = {}
        self.last_not_applicable: dict[str, list[bool]] = {}
        self.last_total: list[float] = []
        self.last_invalid: list[bool] = []
        self.invalid_total = 0
        self.last_stats = RemoteStats()

    def __repr__(self) -> str:
        return f"RemoteReward(url={self.url!r}, batch_size={self.batch_size}, concurrency={self.concurrency})"

    # the same per-component means/stds and invalid count as a local WeightedReward
    _weighted_metrics = WeightedReward.metrics

    def metrics(self, prefix: str = "rewards/") -> dict[str, float]:
        return {**self._weighted_metrics(prefix), f"{prefix}remote_unscored": float(self.last_stats.unscored)}

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **columns: Any) -> list[float]:
        n = len(completion_texts(completions))
        spans = [(lo, min(lo + self.batch_size, n)) for lo in range(0, n, self.batch_size)]
        bodies = [{"prompts": None if prompts is None else list(prompts[lo:hi]),
                   "completions": list(completions[lo:hi]),
                   "columns": _slice_columns(columns, n, lo, hi)} for lo, hi in spans]
        results: list[tuple[dict | None, int, str | None]] = []
        if bodies:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
                results = list(pool.map(self._score_batch, bodies, [hi - lo for lo, hi in spans]))
        stats = RemoteStats(samples=n, batches=len(spans))
        names = list(dict.fromkeys(k for reply, _, _ in results if reply for k in reply["components"]))
        total: list[float] = []
        values: dict[str, list[float]] = {k: [] for k in names}
        not_applicable: dict[str, list[bool]] = {k: [] for k in names}
        for (lo, hi), (reply, retries, failure) in zip(spans, results):  # tallied here, in one thread
            stats.retries += retries
            if reply is None:
                stats.unscored += hi - lo
                stats.failures[failure or "unknown"] = stats.failures.get(failure or "unknown", 0) + hi - lo
                reply = {"rewards": [None] * (hi - lo), "components": {}}
            total += [math.nan if v is None else float(v) for v in reply["rewards"]]
            for k in names:
                vals = reply["components"].get(k, [None] * (hi - lo))
                values[k] += [math.nan if v is None else float(v) for v in vals]
                not_applicable[k] += reply.get("not_applicable", {}).get(k, [False] * (hi - lo))
        if stats.unscored:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(stats.failures.items()))
            log.warning("RemoteReward %s: %d of %d samples unscored (%s)", self.url, stats.unscored, n, why)
        self.last_stats, self.last_values, self.last_total = stats, values, total
        self.last_not_applicable = not_applicable
        self.last_invalid = [not math.isfinite(v) for v in total]
        self.invalid_total += sum(self.last_invalid)
        return total

    def _score_batch(self, body: dict[str, Any], size: int) -> tuple[dict | None, int, str | None]:
        """(valid reply or None, retries used, failure reason or None) for one batch."""
        try:
            data = json.dumps(body, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as err:  # a column that is not JSON: no server can score it
            return None, 0, f"unserializable: {err}"
        raw, retries, failure = post_with_retries(
            f"{self.url}/score", data, {"Content-Type": "application/json"}, timeout_s=self.timeout_s,
            max_retries=self.max_retries, backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s)
        if raw is None:
            return None, retries, failure
        reply = _parse_reply(raw, size)
        return (reply, retries, None) if reply is not None else (None, retries, "bad_response")


def _is_score_list(values: Any, size: int) -> bool:
    return isinstance(values, list) and len(values) == size and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)


def _parse_reply(raw: bytes, size: int) -> dict[str, Any] | None:
    """The reply if it holds ``size`` rewards and ``size`` values per component, else ``None``."""
    try:
        reply = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not _is_score_list(reply.get("rewards"), size):
        return None
    components = reply.get("components", {})
    if not isinstance(components, dict) or not all(_is_score_list(v, size) for v in components.values()):
        return None
    skipped = reply.get("not_applicable", {})
    if not isinstance(skipped, dict) or not all(isinstance(v, list) and len(v) == size and
                                                all(isinstance(x, bool) for x in v) for v in skipped.values()):
        return None
    return {"rewards": reply["rewards"], "components": components, "not_applicable": skipped}


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechrl.rewards.service",
                                     description="Serve speechrl rewards over HTTP (POST /score, GET /health).")
    parser.add_argument("--rewards", required=True, help='reward name → weight as JSON, e.g. \'{"bleu": 1.0}\'')
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8123, help="port (0: a free one, printed at start)")
    parser.add_argument("--max-batch", type=int, default=1024, help="most samples one request may carry")
    parser.add_argument("--workers", type=int, default=2, help="requests scored at once")
    args = parser.parse_args(argv)
    try:
        rewards = json.loads(args.rewards)
    except ValueError as err:
        parser.error(f"--rewards is not JSON: {err}")
    if not isinstance(rewards, dict) or not all(isinstance(w, (int, float)) for w in rewards.values()):
        parser.error('--rewards must be a JSON object of name → weight, e.g. {"bleu": 1.0}')
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(rewards, args.host, args.port, args.max_batch, args.workers)
    except ValueError as err:  # an unknown reward name, a bad max_batch/workers
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
