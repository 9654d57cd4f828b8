"""Diagnostic, never a result: the held-out test metrics of a speech-GRPO run's kept GRPO checkpoints,
each with its paired bootstrap interval against SFT. It shows whether RL helped the test conditions at
a step that dev selection did not pick; choosing a step by it would be choosing on test.

    python scripts/checkpoints_on_test.py RUN_DIR    # → RUN_DIR/diag_checkpoints_test.json
"""

import argparse
import json
from pathlib import Path

import torch
import yaml

from speechrl import checkpoint
from speechrl.eval.bootstrap import intervals
from speechrl.eval.speech_tasks import evaluate, scoring_references, task_item_stats
from speechrl.pipelines import load_recipe
from speechrl.pipelines.speech_grpo import prepare
from speechrl.trainers.lora import add_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished speech_grpo run folder (sft/, grpo/checkpoints/)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.run_dir
    config = yaml.safe_load((out / "config.yaml").read_text())
    config.pop("pipeline", None)
    recipe = load_recipe("speech_grpo", config)
    policy, feats, split, _, _ = prepare(recipe, out / "diag")
    test = split["test"][: recipe.test_examples or None]
    checkpoint.load_weights(out / "sft" / "best" / "model.safetensors", policy)
    add_lora(policy, recipe.grpo.lora)
    items = json.loads((out / "items_test.json").read_text())
    metrics = {}
    for ck in sorted((out / "grpo" / "checkpoints").glob("step-*")):
        checkpoint.load_weights(ck / "model.safetensors", policy)
        metrics[ck.name], hyps = evaluate(policy, test, feats, recipe.task, recipe.grpo.max_new_tokens,
                                          recipe.eval_batch_size, desc=ck.name)
        items[ck.name] = task_item_stats(recipe.task, hyps, scoring_references(test), [e.language for e in test])
    result = {"metrics": metrics, "intervals": intervals(items, "sft", list(metrics))}
    (out / "diag_checkpoints_test.json").write_text(json.dumps(result, indent=1))
    for name, m in metrics.items():
        print(name, {k: round(v, 4) for k, v in m.items()}, "vs sft:", result["intervals"][name])


if __name__ == "__main__":
    main()
