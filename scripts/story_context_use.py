"""Does a unit LM of an Align-SLM run use the story context? (a diagnostic for the story-cloze scores)

The S-/T-StoryCloze-like accuracies of the base unit LM and of every DPO round, scored three ways
(:func:`speechrl.align.minimal_pairs.story_context_use`): the benchmark's protocol, the ending given the
story, the ending alone. When the last two are equal (and near 50 %), the model does not use the story,
and the story-cloze accuracy moves only by noise.

    .venv/bin/python scripts/story_context_use.py runs/align     # base + every round of a finished run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechrl import checkpoint
from speechrl.align.minimal_pairs import story_context_use
from speechrl.models.unit_lm import UnitLM
from speechrl.pipelines.align_slm import AlignSLMRecipe, benchmark_sets
from speechrl.runfolder import read_config
from speechrl.speech.units import BLANK_ID
from speechrl.trainers.dpo import prepare_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an Align-SLM run folder (speechrl run recipes/align_slm.yaml --out …)")
    args = parser.parse_args()
    recipe = read_config(args.run, AlignSLMRecipe)
    benches = benchmark_sets(recipe.benchmarks)
    model = UnitLM.create(recipe.model.lm, BLANK_ID, recipe.model.layers, seed=recipe.seed)
    checkpoint.load_weights(args.run / "unit_lm" / "best" / "model.safetensors", model)
    systems = {"base": None, **{d.name: d for d in sorted(args.run.glob("round*")) if (d / "best").is_dir()}}
    for name, folder in systems.items():
        if folder is not None:
            prepare_policy(model, recipe.dpo.lora)  # the adapter is added once; each round's weights replace it
            checkpoint.load_weights(folder / "best" / "model.safetensors", model)
        model.eval()
        print(name, json.dumps({b: story_context_use(benches[b], model.nll) for b in ("tsc", "ssc")}))


if __name__ == "__main__":
    main()
