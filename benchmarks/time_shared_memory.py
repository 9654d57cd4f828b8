"""Peak accelerator memory of speech GRPO with and without the time-shared schedule (needs CUDA).

    python benchmarks/time_shared_memory.py [--lm-hidden 2048] [--lm-layers 16] [--steps 3] ...

The real :func:`speechrl.trainers.grpo.train_grpo` runs ``--steps`` steps four ways: full fine-tuning
(LoRA off: a full frozen reference copy for the KL, AdamW state for every weight) and LoRA, each with
``offload_idle`` off and on (:mod:`speechrl.schedule`). The policy is a SpeechLM: a random
Whisper encoder (``--whisper-*``; medium-sized by default) as its frozen front end and a random Llama
(``--lm-*``; 1.1 B parameters by default) with the SmolLM2 tokenizer. Prompts are ``--prompts`` × 5 s
of noise (the memory does not care what the audio says), G samples each, BLEU reward. Every run starts
from the same seed, so the runs differ only in where the idle parts wait.

Reported per run: the peak of ``torch.cuda.max_memory_allocated`` per stage (the trainer logs
``mem/<stage>_gb``, resetting the counter as each stage begins) and its maximum over the stages, and
the median step time without the first step. The ratio is
peak with offloading ÷ peak without.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import numpy as np
import torch

from speechrl.config import doc
from speechrl.data.tasks import INSTRUCTIONS, Example
from speechrl.runlog import MetricsLogger, read_metrics
from speechrl.trainers.grpo import SpeechGRPOConfig, train_grpo
from speechrl.trainers.lora import LoRAConfig

STAGES = ("encode", "rollout", "reward", "reference", "update", "evaluate")


@dataclass
class Args:
    lm_hidden: int = doc("Llama hidden size", 2048)
    lm_layers: int = doc("Llama decoder layers", 16)
    lm_intermediate: int = doc("Llama MLP size", 5632)
    whisper_d_model: int = doc("Whisper encoder width", 1024)
    whisper_layers: int = doc("Whisper encoder layers", 24)
    steps: int = doc("GRPO steps per run", 3)
    prompts: int = doc("B: prompts per step", 4)
    group_size: int = doc("G: samples per prompt", 8)
    max_new_tokens: int = doc("completion length (random weights rarely stop early)", 32)
    lora_r: int = doc("LoRA rank of the LoRA runs", 16)
    tokenizer: str = doc("SmolLM2 tokenizer: the offline name or a folder holding it", "smollm2-135m")
    out: str = doc("result file (default benchmarks/results/time_shared_memory.json)", "")


def whisper_folder(args: Args, root: Path) -> str:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(d_model=args.whisper_d_model, encoder_layers=args.whisper_layers, decoder_layers=1,
                        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4 * args.whisper_d_model,
                        decoder_ffn_dim=4 * args.whisper_d_model, num_mel_bins=80)
    folder = root / "whisper"
    WhisperModel(cfg).save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return str(folder)


def make_policy(args: Args, encoder_path: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechrl.models.frontends import WhisperFrontEnd
    from speechrl.models.hub import load_tokenizer
    from speechrl.models.speech_lm import SpeechLM

    torch.manual_seed(0)
    tok = load_tokenizer(args.tokenizer)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.lm_hidden, intermediate_size=args.lm_intermediate,
                      num_hidden_layers=args.lm_layers, num_attention_heads=args.lm_hidden // 64,
                      num_key_value_heads=max(1, args.lm_hidden // 256), max_position_embeddings=2048,
                      tie_word_embeddings=True)
    fe = WhisperFrontEnd(args.lm_hidden, encoder_path=encoder_path)
    return SpeechLM(LlamaForCausalLM(cfg), tok, fe, {"kind": "whisper", "encoder_path": encoder_path})


def run(args: Args, encoder_path: str, lora: bool, offload: bool, root: Path) -> dict[str, Any]:
    policy = make_policy(args, encoder_path)
    rng = np.random.default_rng(0)
    n = args.prompts * args.steps + 4
    feats = {f"u{i}": policy.featurize(rng.normal(0, 0.1, 5 * 16000).astype(np.float32)) for i in range(n)}
    examples = [Example(id=f"u{i}/asr", utterance_id=f"u{i}", task="asr", instruction=INSTRUCTIONS["asr"],
                        reference="the quick brown fox jumps over the lazy dog") for i in range(n)]
    cfg = SpeechGRPOConfig(rewards={"bleu": 1.0}, group_size=args.group_size, prompts_per_step=args.prompts,
                     max_steps=args.steps, max_new_tokens=args.max_new_tokens, beta=0.02, eval_every=0,
                     dev_examples=4, checkpoint_every=10_000, dynamic_sampling=False, offload_idle=offload,
                     lora=LoRAConfig(r=args.lora_r if lora else 0))
    out = root / f"run_{'lora' if lora else 'full'}_{int(offload)}"
    torch.cuda.empty_cache()
    params = sum(p.numel() for p in policy.parameters())
    train_grpo(policy, examples[4:], examples[:4], feats, "asr", cfg, out, MetricsLogger(out, tensorboard=False))
    logged = read_metrics(out / "metrics.jsonl")
    steps = [m for m in logged if "step_s" in m]
    stage_peaks = {s: max((m[f"mem/{s}_gb"] for m in logged if f"mem/{s}_gb" in m), default=None) for s in STAGES}
    result = {"lora": lora, "offload": offload, "params_m": round(params / 1e6, 1),
              "peak_gb": max(v for v in stage_peaks.values() if v is not None),
              "stage_peak_gb": stage_peaks,
              "step_s_median": round(statistics.median(m["step_s"] for m in steps[1:]), 3) if len(steps) > 1 else None}
    del policy
    shutil.rmtree(out, ignore_errors=True)
    torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    if not torch.cuda.is_available():
        raise SystemExit("time_shared_memory needs a CUDA GPU (offloading frees nothing on CPU)")
    root = Path(tempfile.mkdtemp(prefix="speechrl-tsm-"))
    try:
        encoder = whisper_folder(args, root)
        runs = [run(args, encoder, lora, offload, root) for lora in (False, True) for offload in (False, True)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows, summary = [], {}
    for r in runs:
        rows.append(["lora" if r["lora"] else "full", "on" if r["offload"] else "off", r["peak_gb"],
                     *[r["stage_peak_gb"][s] for s in STAGES], r["step_s_median"]])
    for mode in (False, True):
        off, on = (next(r for r in runs if r["lora"] == mode and r["offload"] == o) for o in (False, True))
        summary["lora" if mode else "full"] = {"peak_ratio": round(on["peak_gb"] / off["peak_gb"], 3),
                                               "step_time_ratio": round(on["step_s_median"] / off["step_s_median"], 3)}
    print(common.table(rows, ["training", "offload", "peak GB", *STAGES, "step s"]))
    print(summary)
    machine = common.machine(torch.get_num_threads())
    machine["gpu"] = torch.cuda.get_device_name()
    common.write_result("time_shared_memory", {"args": asdict(args), "machine": machine, "runs": runs,
                                               "summary": summary}, args.out or None)


if __name__ == "__main__":
    main()
