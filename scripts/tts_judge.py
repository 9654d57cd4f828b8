"""Does a TTS RL dev gain hold on dev texts that model selection never saw? (a diagnostic for issue 5)

A ``tts_rl`` run picks each system's best step on the first ``rl.dev_examples`` dev texts. This script
scores systems on the *other* dev texts (the judge set): the SFT model of a finished run, or an RL
system trained again from that run's SFT and Token2Text with any recipe overrides. Results accumulate in
``OUT/judge.json``; each variant trains under ``OUT/<system>_<overrides>``.

    .venv/bin/python scripts/tts_judge.py runs/tts runs/tts-judge                      # SFT only
    .venv/bin/python scripts/tts_judge.py runs/tts runs/tts-judge --system grpo rl.max_steps=60
    .venv/bin/python scripts/tts_judge.py runs/tts runs/tts-judge --proxy 40           # Token2Text vs WER
    .venv/bin/python scripts/tts_judge.py runs/tts runs/tts-judge --proxy 40 --train-token2text token2text_samples=0

``--train-token2text`` trains a Token2Text for the run's SFT model as the recipe (with the overrides) does —
``token2text_samples`` of the SFT model's own samples beside the reference units — into
``OUT/token2text_<samples>``, and ranks or trains with it instead of the run's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from speechrl import checkpoint
from speechrl.models.token2text import Token2Text
from speechrl.models.tts_lm import SpeechVocab
from speechrl.pipelines.tts_rl import SYSTEMS, TTSRLRecipe, policy_speech, sft_policy, splits, system_config
from speechrl.rewards.tts import UnitRenderer, evaluation_renderer
from speechrl.runfolder import read_config
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.eval.tts import evaluate_tts, reward_ranking
from speechrl.trainers.tts_rl import train_tts_rl
from speechrl.trainers.tts_sft import train_token2text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished tts_rl run folder (its config, vocab, sft/, token2text/)")
    parser.add_argument("out", type=Path, help="folder for judge.json and the variants' training")
    parser.add_argument("--system", choices=sorted(SYSTEMS), help="train this RL system again and judge it")
    parser.add_argument("--token2text", type=Path, help="Token2Text weights (default: the run's)")
    parser.add_argument("--proxy", type=int, default=0, help="Token2Text-vs-WER ranking on this many judge texts")
    parser.add_argument("--train-token2text", action="store_true",
                        help="train a Token2Text as the recipe (with the overrides) does, instead of the run's")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value (e.g. rl.lr=1e-3)")
    args = parser.parse_intermixed_args()
    run, out = args.run, args.out
    recipe = read_config(run, TTSRLRecipe, args.overrides)
    data, prompts, _ = splits(recipe)
    judge = data["dev"][recipe.rl.dev_examples:]
    vocab = SpeechVocab.from_dict(read_json(run / "vocab.json"))
    renderer, evaluator = UnitRenderer(), evaluation_renderer()  # the recipe's: rollouts and samples; evaluations

    def token2text() -> Token2Text:
        if args.train_token2text:
            folder = out / f"token2text_{recipe.token2text_samples}"
            folder.mkdir(parents=True, exist_ok=True)
            samples = (policy_speech(sft_policy(run, recipe), prompts, recipe, renderer, folder / "samples.json")
                       if recipe.token2text_samples else [])
            torch.manual_seed(recipe.token2text.seed)
            t2t = Token2Text.create(vocab, recipe.model.lm, recipe.model.token2text_layers, [])
            train_token2text(t2t, data["train"] + samples, data["dev"], recipe.token2text, folder, MetricsLogger(out),
                             folder.name)
            return t2t.eval()
        t2t = Token2Text.create(vocab, recipe.model.lm, recipe.model.token2text_layers, [])
        checkpoint.load_weights(args.token2text or run / "token2text" / "best" / "model.safetensors", t2t)
        return t2t.eval()

    out.mkdir(parents=True, exist_ok=True)
    results = read_json(out / "judge.json") if (out / "judge.json").is_file() else {}
    results["judge_texts"] = len(judge)
    if "sft" not in results or args.proxy:
        sft = sft_policy(run, recipe).eval()  # untouched: the RL variant below trains a copy of its own
        if "sft" not in results:
            results["sft"] = evaluate_tts(sft, judge, evaluator, recipe.decode, "judge sft")[0]
        if args.proxy:
            source = (f"trained, token2text_samples={recipe.token2text_samples}" if args.train_token2text
                      else args.token2text or "run")
            results[f"proxy:{source}"] = reward_ranking(
                sft, token2text(), [e.text for e in judge[:args.proxy]], renderer)
        del sft
    if args.system:
        cfg = system_config(recipe, args.system)
        policy = sft_policy(run, recipe)
        name = "_".join([args.system, *args.overrides]).replace("=", "-")
        trained = train_tts_rl(policy, token2text() if cfg.method != "grpo" else None, prompts, data["dev"], cfg,
                               out / name, MetricsLogger(out), name, renderer, recipe.decode, evaluator=evaluator)
        results[name] = {**evaluate_tts(policy, judge, evaluator, recipe.decode, f"judge {name}")[0],
                         "best_step": trained["best_step"],
                         "selection_dev_wer": {k: v["wer"] for k, v in trained["dev"].items()}}
    write_json(out / "judge.json", results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
