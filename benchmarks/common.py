"""What the on-demand benchmarks share: a CLI from a typed ``Args`` dataclass, the tiny random LM,
the machine's facts, and the result file.

Benchmarks are run by hand (``python benchmarks/<name>.py``), never by pytest: speed is measured as a
ratio against a reference run taken side by side in the same process, so a loaded or slow machine
moves both sides together.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml

from speechrl.config import describe, from_dict
from speechrl.runlog import write_json

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(cls: type[T], description: str, argv: list[str] | None = None) -> T:
    """``--field value`` for every field of ``cls`` (values read as YAML, then type-checked)."""
    parser = argparse.ArgumentParser(description=description,
                                     epilog="\n".join(describe(cls)),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar="V",
                            help=f.metadata.get("help", ""))
    given = {k: yaml.safe_load(v) for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return from_dict(cls, given)


def set_threads(threads: int) -> None:
    """Both sides of a comparison run on the same number of intra-op threads."""
    import torch

    torch.set_num_threads(threads)


def tiny_lm(vocab_size: int, arch: str = "llama", hidden: int = 64, layers: int = 2, seed: int = 0):
    """A random 2-layer causal LM (Llama or Qwen2) sized for the SmolLM2 tokenizer's vocabulary."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 512, "tie_word_embeddings": True}
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown arch {arch!r}; choose llama or qwen2")


def machine(threads: int) -> dict[str, Any]:
    """Facts that make a number interpretable later: versions, cores, threads, load when it was taken."""
    import torch
    import transformers

    facts = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
             "cpu_count": os.cpu_count(), "threads": threads, "cuda": torch.cuda.is_available(),
             "load_avg_1m": round(os.getloadavg()[0], 2), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import trl

        facts["trl"] = trl.__version__
    except ImportError:
        pass
    return facts


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def write_result(name: str, data: dict[str, Any], out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    return write_json(path, data)


def table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
