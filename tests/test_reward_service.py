"""speechrl.rewards.service: a real reward server process (the module's entry point on a free port)
and the RemoteReward client, against the in-process reward on the same inputs.

Behaviours the real service cannot be made to show on demand — a reply that never comes in time, a
reply that is not JSON — come from a stdlib ``ThreadingHTTPServer`` in a thread of this process, over
real sockets, as in tests/test_judge.py.
"""

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from speechrl.rewards import make_reward
from speechrl.rewards.service import RemoteReward, main

SPEC = {"bleu": 1.0, "accuracy_wer": 0.5, "keyword_score": 0.25}

REFS = ["the cat sat on the mat", "anna walked to the market", "a red ball rolled away", "tom found a key",
        "the old man sang", "birds fly south in winter", "she bought three apples", "the door was open"] * 2
HYPS = ["the cat sat on a mat", "anna walked to market", "", "tom found the key today",
        "the old old man sang sang", "birds fly north", "she bought apples", "the door was closed"] * 2
KEYWORDS = [[w for w in r.split() if len(w) > 3] for r in REFS]
PROMPTS = [f"Transcribe utterance {i}." for i in range(len(REFS))]


def start_service(rewards: dict, *extra: str) -> tuple[subprocess.Popen, str]:
    """``python -m speechrl.rewards.service`` on a free port; returns the process and its URL once it serves."""
    proc = subprocess.Popen([sys.executable, "-m", "speechrl.rewards.service", "--rewards", json.dumps(rewards),
                             "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()  # printed once the socket is bound and the rewards are built
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"service did not start: {line}{proc.stdout.read()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain its log
    return proc, match.group(0)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def service():
    proc, url = start_service(SPEC, "--max-batch", "8", "--workers", "2")
    yield url
    stop(proc)


def test_health_names_the_rewards(service):
    with urllib.request.urlopen(f"{service}/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["status"] == "ok" and health["rewards"] == SPEC and health["max_batch"] == 8


@pytest.mark.parametrize("batch_size, concurrency", [(16, 1), (3, 4)])
def test_remote_equals_in_process_reward(service, batch_size, concurrency):
    local = make_reward(SPEC)
    expected = local(PROMPTS, HYPS, reference=REFS, keywords=KEYWORDS, language=["en"] * len(REFS))
    remote = RemoteReward(service, timeout_s=10, batch_size=min(batch_size, 8), concurrency=concurrency)
    got = remote(PROMPTS, HYPS, reference=REFS, keywords=KEYWORDS, language=["en"] * len(REFS))
    assert got == pytest.approx(expected, abs=1e-12)
    assert remote.last_values.keys() == local.last_values.keys()
    for name in SPEC:
        assert remote.last_values[name] == pytest.approx(local.last_values[name], abs=1e-12, nan_ok=True)
    assert remote.last_not_applicable == local.last_not_applicable
    assert remote.last_stats.batches == math.ceil(len(REFS) / min(batch_size, 8)) and remote.last_stats.unscored == 0
    local_metrics, remote_metrics = local.metrics(), remote.metrics()
    assert remote_metrics.pop("rewards/remote_unscored") == 0
    assert remote_metrics == pytest.approx(local_metrics)


def test_not_applicable_terms_travel_like_in_process(service):
    keywords = [[], *KEYWORDS[1:4]]  # no keywords for the first example: its keyword term is left out
    local = make_reward(SPEC)
    expected = local(PROMPTS[:4], HYPS[:4], reference=REFS[:4], keywords=keywords)
    remote = RemoteReward(service)
    assert remote(PROMPTS[:4], HYPS[:4], reference=REFS[:4], keywords=keywords) == pytest.approx(expected)
    assert remote.last_not_applicable["keyword_score"] == [True, False, False, False]
    assert remote.metrics()["rewards/keyword_score_not_applicable"] == 1.0


def test_conversational_completions_and_no_prompts(service):
    completions = [[{"role": "assistant", "content": h}] for h in HYPS[:4]]
    local = make_reward(SPEC)(None, completions, reference=REFS[:4], keywords=KEYWORDS[:4])
    assert RemoteReward(service)(None, completions, reference=REFS[:4], keywords=KEYWORDS[:4]) == pytest.approx(local)
    assert RemoteReward(service)(None, [], reference=[], keywords=[]) == []


def test_rejected_inputs_are_nan_without_retry(service, caplog):
    remote = RemoteReward(service, max_retries=3, backoff_s=5.0, batch_size=16)  # 16 > max_batch 8: 413
    t0 = time.monotonic()
    assert all(math.isnan(v) for v in remote(PROMPTS, HYPS, reference=REFS, keywords=KEYWORDS))
    assert time.monotonic() - t0 < 4.0  # a 4xx is final: no 5 s backoff
    assert remote.last_stats.failures == {"http_413": 16} and remote.last_stats.retries == 0
    missing = RemoteReward(service)(PROMPTS[:2], HYPS[:2], keywords=KEYWORDS[:2])  # no reference column: 400
    assert all(math.isnan(v) for v in missing)
    assert remote.metrics()["rewards/invalid_count"] == 16 and "16 of 16 samples unscored" in caplog.text


def test_server_down_gives_nan_after_bounded_retries():
    proc, url = start_service({"bleu": 1.0})
    remote = RemoteReward(url, timeout_s=2.0, max_retries=2, backoff_s=0.05, batch_size=4, concurrency=2)
    assert remote(PROMPTS[:4], HYPS[:4], reference=REFS[:4]) == pytest.approx(
        make_reward({"bleu": 1.0})(PROMPTS[:4], HYPS[:4], reference=REFS[:4]))
    stop(proc)
    t0 = time.monotonic()
    out = remote(PROMPTS[:8], HYPS[:8], reference=REFS[:8])
    assert time.monotonic() - t0 < 3.0
    assert len(out) == 8 and all(math.isnan(v) for v in out)
    assert remote.last_stats.retries == 2 * 2 and remote.last_stats.failures == {"connection": 8}
    assert remote.last_invalid == [True] * 8 and remote.invalid_total == 8


# -- a misbehaving server in this process ----------------------------------------------------------

class _Fake(BaseHTTPRequestHandler):
    behaviour = "ok"
    delay_s = 0.0
    in_flight = peak = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Fake.lock:
            _Fake.in_flight += 1
            _Fake.peak = max(_Fake.peak, _Fake.in_flight)
        try:
            time.sleep(_Fake.delay_s)
            n = len(body["completions"])
            data = {"garbage": b"<html>oops</html>", "short": json.dumps({"rewards": [0.5] * (n - 1)}).encode(),
                    "ok": json.dumps({"rewards": [float(len(c)) for c in body["completions"]],
                                      "components": {"len": [float(len(c)) for c in body["completions"]]}}).encode()
                    }[_Fake.behaviour]
        finally:  # before the reply: once it is sent the client may send its next request at once (peak 5 under load)
            with _Fake.lock:
                _Fake.in_flight -= 1
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake():
    _Fake.behaviour, _Fake.delay_s, _Fake.in_flight, _Fake.peak = "ok", 0.0, 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_slow_server_times_out_to_nan(fake):
    _Fake.delay_s = 10.0  # far beyond the client's patience, so a slow machine cannot blur the bound
    remote = RemoteReward(fake, timeout_s=0.3, max_retries=1, backoff_s=0.01, batch_size=2, concurrency=2)
    t0 = time.monotonic()
    out = remote(None, HYPS[:4])
    assert time.monotonic() - t0 < 5.0  # gave up (2 tries of 0.3 s) long before the server answered
    assert all(math.isnan(v) for v in out) and remote.last_stats.failures == {"timeout": 4}


@pytest.mark.parametrize("behaviour", ["garbage", "short"])
def test_garbage_reply_is_nan(fake, behaviour):
    _Fake.behaviour = behaviour
    remote = RemoteReward(fake, max_retries=2, batch_size=4)
    out = remote(None, HYPS[:6])
    assert len(out) == 6 and all(math.isnan(v) for v in out)
    assert remote.last_stats.failures == {"bad_response": 6} and remote.last_stats.retries == 0


def test_batches_run_concurrently_and_keep_their_order(fake):
    _Fake.delay_s = 0.3
    remote = RemoteReward(fake, batch_size=2, concurrency=4)
    out = remote(None, HYPS)  # 16 samples = 8 batches, 4 at a time
    assert _Fake.peak == 4  # four requests were in the server at once
    assert out == [float(len(h)) for h in HYPS] and remote.last_values["len"] == out


def test_bad_settings_and_cli_errors(capsys):
    with pytest.raises(ValueError):
        RemoteReward("localhost:8123")
    with pytest.raises(ValueError):
        RemoteReward("http://h:1", batch_size=0)
    with pytest.raises(SystemExit):
        main(["--rewards", '{"no_such_reward": 1}', "--port", "0"])
    assert "unknown reward" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rewards", "bleu"])

