"""Does the TTS LM's SFT read its text? The recipe's SFT with any overrides, scored on dev (issue 23).

    .venv/bin/python scripts/tts_sft_dev.py OUT [--ceiling] [--samples 4] [key=value ...]
    .venv/bin/python scripts/tts_sft_dev.py runs/tts-input/phonemes model.text_input=phonemes
    .venv/bin/python scripts/tts_sft_dev.py runs/tts-input/extra1000 extra_speech=1000 model.text_input=phonemes

Trains the TTS recipe's SFT (its defaults with the overrides, to its best dev NLL) into ``OUT/sft``, then
renders the unseen dev texts (``dev`` of :func:`speechrl.pipelines.tts_rl.splits`; the first
``rl.dev_examples`` are the ones RL selects on) through the recipe's vocoder and Whisper: greedy, and
``--samples`` samples per text at the RL temperature (``rl.temperature``, a seeded sampler). With
``--ceiling``, also the dev reference speech's own units (the ceiling). ``OUT/dev.json`` gets, per decoding:
corpus ``wer``/``cer``, ``keyword_recall`` (per text, the share of the corpus's keyword mentions that the
transcript holds, averaged over the texts with keywords), mean ``tokens`` and ``duration_ratio``; for the
samples also the mean over texts of the best sample's WER (``best_of_wer``) and of the best sample's
keyword recall (``keyword_recall_any``): what a GRPO group has to reinforce. Nothing here reads the test split's speech.

The recipe's ``extra_speech=N`` adds N paired utterances to SFT's training set: new sentences of the corpus
grammar (none in train/dev/test) spoken by the training voices at the corpus's speeds, their hama units
extracted as the corpus's are (:func:`speechrl.pipelines.common.extra_speech_rows`) — the cheapest route to
more units with durations. (Until 2026-12-05 this script's ``--extra N`` built them itself.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechrl.eval.tts import DecodeConfig, evaluate_tts, tts_metrics
from speechrl.models.tts_lm import SpeechVocab, TTSLM
from speechrl.pipelines import load_recipe
from speechrl.pipelines.common import dataset_rows
from speechrl.pipelines.tts_rl import TTSRLRecipe, splits
from speechrl.rewards.asr import keyword_precision_recall
from speechrl.rewards.tts import UnitRenderer
from speechrl.runlog import MetricsLogger, read_json, write_json
from speechrl.trainers.tts_sft import train_tts_lm


def keyword_recalls(texts: Sequence[str], hyps: Sequence[str], keywords: Sequence[list[str]]) -> list[float]:
    """Per text with keywords: the share of its keyword mentions the transcript holds."""
    return [keyword_precision_recall(h, t, k)[1] for t, h, k in zip(texts, hyps, keywords) if k]


def scored(metrics: dict[str, Any], details: list[dict[str, Any]], keywords: dict[str, list[str]]) -> dict[str, Any]:
    """``metrics`` plus ``keyword_recall``: the mean over texts with keywords of their recall."""
    recalls = keyword_recalls([d["text"] for d in details], [d["hypothesis"] for d in details],
                              [keywords.get(d["id"]) or [] for d in details])
    return {**metrics, "keyword_recall": round(float(np.mean(recalls)), 4) if recalls else None}


def sampled(policy: TTSLM, dev: list, renderer: UnitRenderer, n: int, temperature: float,
            keywords: dict[str, list[str]]) -> dict[str, float]:
    """``n`` seeded samples per dev text at ``temperature``: WER (mean over the n decodings), the best
    sample's WER per text, the spread of WER within a text's samples, keyword recall of a sample and of
    the text's best sample for keywords (a mention any sample says)."""
    runs = [evaluate_tts(policy, dev, renderer, DecodeConfig(temperature=temperature, seed=s),
                         f"dev T{temperature} #{s}") for s in range(n)]
    per_text = np.array([[d["wer"] for d in details] for _, details in runs])  # [n, texts]
    kws = [keywords.get(e.id) or [] for e in dev]
    recall = np.array([keyword_recalls([e.text for e in dev], [d["hypothesis"] for d in details], kws)
                       for _, details in runs])  # [n, texts with keywords]
    return {"wer": round(float(np.mean([m["wer"] for m, _ in runs])), 4),
            "cer": round(float(np.mean([m["cer"] for m, _ in runs])), 4),
            "best_of_wer": round(float(per_text.min(0).mean()), 4),
            "mean_text_wer": round(float(per_text.mean()), 4),
            "within_text_wer_std": round(float(per_text.std(0).mean()), 4),
            "keyword_recall": round(float(recall.mean()), 4),
            "keyword_recall_any": round(float(recall.max(0).mean()), 4),
            "samples": n, "temperature": temperature}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for sft/ and dev.json")
    parser.add_argument("--samples", type=int, default=4, help="samples per dev text at rl.temperature (0: none)")
    parser.add_argument("--ceiling", action="store_true", help="also render the dev reference units")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value (e.g. model.text_input=phonemes)")
    args = parser.parse_intermixed_args()
    recipe: TTSRLRecipe = load_recipe("tts_rl", None, args.overrides)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data, _, _ = splits(recipe)
    train, dev = data["train"], data["dev"]
    _, rows, _ = dataset_rows(recipe.data, recipe.corpus, "tts", None, recipe.corpus_dir)
    keywords = {r["id"]: list(r.get("keywords") or []) for r in rows}
    results: dict[str, Any] = read_json(out / "dev.json") if (out / "dev.json").is_file() else {}
    results.update({"overrides": args.overrides, "train": len(train), "dev_texts": len(dev)})
    renderer = UnitRenderer()
    if args.ceiling and "ground_truth" not in results:
        wavs, hyps = renderer([e.units for e in dev])
        results["ground_truth"] = scored(*tts_metrics(dev, wavs, hyps), keywords)
    vocab = SpeechVocab.fit([e.units for e in train], recipe.model.duration_edges)
    torch.manual_seed(recipe.sft.seed)
    policy = TTSLM.create(vocab, recipe.model.lm, recipe.model.decoder_layers, recipe.model.text_input)
    t0 = time.time()
    trained = train_tts_lm(policy, train, dev, recipe.sft, out / "sft", MetricsLogger(out))
    results["sft"] = {k: v for k, v in trained.items() if k != "dev"} | {"wall_s": round(time.time() - t0, 1)}
    metrics, details = evaluate_tts(policy, dev, renderer, recipe.decode, "dev greedy")
    results["greedy"] = scored(metrics, details, keywords)
    results["greedy_examples"] = [{"text": d["text"], "hypothesis": d["hypothesis"]} for d in details[:8]]
    if args.samples:
        results["sampled"] = sampled(policy, dev, renderer, args.samples, recipe.rl.temperature, keywords)
    write_json(out / "dev.json", results)
    print(json.dumps({k: v for k, v in results.items() if k != "greedy_examples"}, indent=1))


if __name__ == "__main__":
    main()
