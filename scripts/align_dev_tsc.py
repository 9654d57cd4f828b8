"""Dev story cloze of an Align-SLM run: its base and each curriculum round scored on a T-StoryCloze-like
set built from other grammar stories (seed 2, none in the run's training stories nor in the benchmark),
so that curriculum settings are chosen on dev, never on the recipe's held-out benchmark.

    python scripts/align_dev_tsc.py RUN_DIR [RUN_DIR ...] [--pairs 200]   # → RUN_DIR/dev_tsc.json

Per system: T-SC-like accuracy (the recipe's measure), the story-context diagnostic (ending given the
story / ending alone) and the paired bootstrap interval of each round against the base.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from speechrl import checkpoint
from speechrl.align.minimal_pairs import build_benchmark, evaluate_minimal_pairs, story_context_use
from speechrl.data.features import features
from speechrl.eval.bootstrap import intervals, mean_stats
from speechrl.models.hub import cache_dir
from speechrl.models.unit_lm import UnitLM
from speechrl.pipelines import load_recipe
from speechrl.pipelines.align_slm import word_lexicon
from speechrl.pipelines.common import dataset_rows
from speechrl.speech.units import BLANK_ID
from speechrl.trainers.dpo import prepare_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="Align-SLM run folders (unit_lm/, round*/) of one recipe")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2, help="grammar seed of the dev stories")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((args.runs[0] / "config.yaml").read_text())
    config.pop("pipeline", None)
    recipe = load_recipe("align_slm", config)
    pairs = build_benchmark("tsc", cache_dir() / "benchmarks_dev", args.pairs, args.seed, recipe.benchmarks.voices)
    num_units = BLANK_ID
    if recipe.model.tokens == "words":
        corpus_dir, rows, _ = dataset_rows(recipe.data, recipe.corpus, "audio", None)
        feats = features(corpus_dir, rows, "units")
        split = {s: [r for r in rows if r["split"] == s and r["id"] in feats] for s in ("train", "dev")}
        lexicon = word_lexicon(recipe, split)
        pairs = [replace(p, positive_units=lexicon.encode(p.positive_units),
                         negative_units=lexicon.encode(p.negative_units)) for p in pairs]
        num_units = lexicon.vocab_size
    for run in args.runs:
        model = UnitLM.create(recipe.model.lm, num_units, recipe.model.layers, seed=recipe.seed)
        checkpoint.load_weights(run / "unit_lm" / "best" / "model.safetensors", model)
        rounds = sorted(run.glob("round*/best/model.safetensors"), key=lambda p: int(p.parts[-3][5:]))
        prepare_policy(model, recipe.dpo.lora)  # the adapter starts at zero: the base's scores are unchanged
        metrics, items = {}, {}
        for name, weights in [("base", None), *((w.parts[-3], w) for w in rounds)]:
            if weights is not None:
                checkpoint.load_weights(weights, model)
            model.eval()
            scored = evaluate_minimal_pairs(pairs, model.nll)
            use = story_context_use(pairs, model.nll)
            metrics[name] = {"tsc": 100 * scored["accuracy"], "given_story": use["ending|context"],
                             "alone": use["ending alone"]}
            items[name] = {"tsc": mean_stats([100 * x for x in scored["scores"]]).tolist()}
            print(run.name, name, {k: round(v, 2) for k, v in metrics[name].items()}, flush=True)
        result = {"pairs": len(pairs), "seed": args.seed, "metrics": metrics,
                  "intervals": intervals(items, "base", list(metrics))}
        (run / "dev_tsc.json").write_text(json.dumps(result, indent=1))
        print(run.name, {k: v["tsc"] for k, v in result["intervals"].items()}, flush=True)


if __name__ == "__main__":
    main()
