"""The vLLM rollout engine's glue, against stand-ins for what cannot run here.

vLLM needs a CUDA GPU and its own wheel, which no machine of this project's CI has (nor, so far, any
GPU machine it was lent: it cannot fetch packages). So the ``vllm`` module (colocate mode) and a
``vllm serve`` process (server mode) are replaced by stand-ins that keep vLLM's interfaces — an
``LLM`` taking prompt embeddings and ``SamplingParams``, returning token ids with their log-probs and
loading weights through ``model_runner.model.load_weights``; an HTTP server with ``/v1/completions``
(base64 ``prompt_embeds``, ``return_tokens_as_token_ids``) and ``/v1/load_lora_adapter`` — and sample
from the very folder and adapters the engine exports, with Hugging Face ``generate``. What is tested is
ours: the export, prompt embeddings without padding, parsing, and weight sync after every update,
checked the way a real run checks it — rollout/trainer log-prob parity at every GRPO step.
"""

import base64
import io
import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_tiny_policy
from speechrl.models.policy import generated_logps
from speechrl.rollout import VLLMConfig, VLLMEngine
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.trainers.grpo import train_grpo
from speechrl.trainers.lora import LoRAConfig
from test_gpu import grpo_cfg, synthetic_asr


def hf_sample(model, embeds: torch.Tensor, p: dict) -> tuple[list[int], list[float]]:
    """One completion from prompt embeddings [L, D]: token ids up to and including the stop token, and
    their log-probs at the sampling temperature (what vLLM returns with logprobs_mode=processed_logprobs
    at top-p 1)."""
    with torch.no_grad():
        out = model.generate(inputs_embeds=embeds[None], attention_mask=torch.ones(1, len(embeds), dtype=torch.long),
                             max_new_tokens=p["max_tokens"], do_sample=True, temperature=p["temperature"],
                             top_p=p["top_p"], eos_token_id=p["stop_token_ids"], pad_token_id=p["stop_token_ids"][0],
                             output_logits=True, return_dict_in_generate=True)
    ids = out.sequences[:, -len(out.logits):]
    logps = generated_logps(out, ids, p["temperature"])[0].tolist()
    ids = ids[0].tolist()
    n = next((i + 1 for i, t in enumerate(ids) if t in p["stop_token_ids"]), len(ids))
    return ids[:n], logps[:n]


class FakeLLM:
    """``vllm.LLM`` stand-in: loads the exported folder, samples with HF, loads weights in place."""

    instances: list["FakeLLM"] = []

    def __init__(self, model: str, **kw):
        self.kw = kw
        self.hf = AutoModelForCausalLM.from_pretrained(model, use_safetensors=True).eval()
        runner = types.SimpleNamespace(model=types.SimpleNamespace(load_weights=self.load_weights))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))
        self.loads = 0
        FakeLLM.instances.append(self)

    def load_weights(self, items) -> None:
        missing, unexpected = self.hf.load_state_dict(dict(items), strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}
        self.loads += 1

    def generate(self, prompts, params, use_tqdm=True):
        outs = []
        for prompt in prompts:
            ids, lps = hf_sample(self.hf, prompt["prompt_embeds"], params.kw)
            step = [{t: types.SimpleNamespace(logprob=lp)} for t, lp in zip(ids, lps)]
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids, logprobs=step)]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(kw=kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def vllm_cfg(**kw):
    # tanh_wer: random completions still differ in it, so advantages (and updates) are not all zero
    return grpo_cfg(**{"rewards": {"tanh_wer": 1.0}, "beta": 0.05, "lr": 3e-2, "temperature": 0.9,
                       "rollout_engine": "vllm", "lora": LoRAConfig(r=4), **kw})


def parity(out):
    return [m["rollout_logp_diff_max"] for m in read_metrics(out / "metrics.jsonl") if "rollout_logp_diff_max" in m]


def test_colocated_vllm_samples_from_the_trained_weights(fake_vllm, tmp_path, monkeypatch):
    train, dev, feats = synthetic_asr()
    out = tmp_path / "sync"
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", vllm_cfg(), out, MetricsLogger(out, tensorboard=False))
    llm = FakeLLM.instances[0]
    assert llm.kw["enable_prompt_embeds"] and llm.kw["logprobs_mode"] == "processed_logprobs"
    assert llm.loads == 3  # after every update
    assert len(parity(out)) == 3 and max(parity(out)) < 1e-4
    # the check has teeth: without weight sync the engine samples from stale weights after step 1
    monkeypatch.setattr(VLLMEngine, "sync_weights", lambda self, policy: None)
    stale = tmp_path / "stale"
    train_grpo(make_tiny_policy(), train, dev, feats, "asr", vllm_cfg(), stale, MetricsLogger(stale, tensorboard=False))
    assert parity(stale)[0] < 1e-4 and max(parity(stale)[1:]) > 1e-3


def test_full_finetuning_needs_colocate_and_vllm_must_be_installed(tmp_path, monkeypatch):
    train, dev, feats = synthetic_asr()
    server = vllm_cfg(vllm=VLLMConfig(mode="server", url="http://127.0.0.1:9"), lora=LoRAConfig(r=0))
    with pytest.raises(ValueError, match="full fine-tuning.*colocate"):
        train_grpo(make_tiny_policy(), train, dev, feats, "asr", server, tmp_path / "a")
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ImportError, match="pip install vllm"):
        train_grpo(make_tiny_policy(), train, dev, feats, "asr", vllm_cfg(), tmp_path / "b")


class FakeServer(BaseHTTPRequestHandler):
    """``vllm serve --enable-prompt-embeds --enable-lora`` stand-in over the exported folder."""

    base_folder = ""
    models: dict = {}
    requests: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeServer.requests.append((self.path, body))
        reply = {}
        if self.path == "/v1/load_lora_adapter":
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(FakeServer.base_folder, use_safetensors=True)
            FakeServer.models[body["lora_name"]] = PeftModel.from_pretrained(base, body["lora_path"]).merge_and_unload().eval()
        elif self.path == "/v1/unload_lora_adapter":
            del FakeServer.models[body["lora_name"]]
        elif self.path == "/v1/completions":
            model = FakeServer.models[body["model"]]
            choices = []
            for i, b64 in enumerate(body["prompt_embeds"]):
                embeds = torch.load(io.BytesIO(base64.b64decode(b64)), weights_only=True)
                ids, lps = hf_sample(model, embeds, body)
                choices.append({"index": i, "logprobs": {"tokens": [f"token_id:{t}" for t in ids],
                                                         "token_logprobs": lps}})
            reply = {"choices": choices[::-1]}  # any order: the engine sorts by index
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_vllm_server_mode_syncs_the_lora_adapter_every_step(tmp_path, monkeypatch):
    train, dev, feats = synthetic_asr()
    out = tmp_path / "run"
    FakeServer.base_folder, FakeServer.models, FakeServer.requests = str(out / "vllm_lm"), {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        train_grpo(make_tiny_policy(), train, dev, feats, "asr", vllm_cfg(vllm=VLLMConfig(mode="server", url=url)),
                   out, MetricsLogger(out, tensorboard=False))
    finally:
        server.shutdown()
    paths = [p for p, _ in FakeServer.requests]
    assert paths.count("/v1/load_lora_adapter") == 4 and paths.count("/v1/completions") == 3  # start + 3 updates
    assert list(FakeServer.models) == ["speechrl-4"]  # older adapters unloaded
    assert len(parity(out)) == 3 and max(parity(out)) < 1e-4
