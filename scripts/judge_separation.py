"""Does a local judge tell good continuations from bad ones? (issue 24: a judge that applies the rubric)

For ``--prompts`` grammar stories (:func:`speechrl.corpus.grammar.generate_stories`), the prompt is the
story without its last sentence and the judge (:class:`speechrl.align.judge.LocalJudge`) scores three
continuations of it:

* ``true``: the story's own ending;
* ``other``: the ending of another story, about another protagonist, companion and object;
* ``shuffled``: the words of the true ending in a random order.

It prints one JSON line: the mean score per condition, how often the true sentence scores strictly
above the other story's sentence and above the shuffled one (an unscored sample never does), the
unscored count, the seconds per judgement (the ``score`` calls only, at ``--threads`` torch threads) and
the process's peak RSS. A judge worth using scores ``true`` above both in most prompts.

``--model`` is an offline name or folder (:func:`speechrl.models.hub.load_causal_lm`) or a ``.gguf``
file, loaded with ``from_pretrained(folder, gguf_file=…)`` and dequantised to fp32 in memory::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/judge_separation.py --model smollm2-135m --mode likelihood
    OMP_NUM_THREADS=1 .venv/bin/python scripts/judge_separation.py --model smollm2-135m --mode expected
    OMP_NUM_THREADS=1 .venv/bin/python scripts/judge_separation.py --model path/to/model.gguf --mode boxed \\
        --prompts 10 --max-new-tokens 96
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path
from typing import Any

import torch

from speechrl.align.judge import LocalJudge, mean_score
from speechrl.corpus.grammar import Story, generate_stories

CONDITIONS = ("true", "other", "shuffled")


def separation_items(n: int, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """``n`` prompts (a story without its ending) and, per condition, one continuation for each.

    The ending is the grammar's *coherent* sentence: it names the protagonist, the companion and the
    object of its own story, so another story's ending (with another protagonist and companion) does
    not fit the prompt. A middle sentence would not do: another story's "Later, he saw his friend Max
    near the river." continues most prompts as well as the story's own one does.
    """
    stories = generate_stories(n, seed)
    rng = random.Random(seed)
    prompts = [" ".join(s.text for s in story.sentences[:-1]) for story in stories]
    true = [story.sentences[-1].text for story in stories]
    other = [_other_ending(stories, i) for i in range(n)]
    return prompts, {"true": true, "other": other, "shuffled": [_shuffle(t, rng) for t in true]}


def _other_ending(stories: list[Story], i: int) -> str:
    """The ending of the next story (wrapping around) whose protagonist and companion both differ from
    story ``i``'s."""
    cast = {stories[i].entities["name"], stories[i].entities["companion"]}
    for k in range(1, len(stories)):
        other = stories[(i + k) % len(stories)]
        if not cast & {other.entities["name"], other.entities["companion"]}:
            return other.sentences[-1].text
    raise ValueError(f"no other story has a cast apart from story {stories[i].id}'s")


def _shuffle(sentence: str, rng: random.Random) -> str:
    """The words of ``sentence`` in a random order other than the original (the final period stays last)."""
    words = sentence.rstrip(".").split()
    if len(set(words)) < 2:
        raise ValueError(f"cannot shuffle {sentence!r}")
    order = list(words)
    while order == words:
        rng.shuffle(order)
    return " ".join(order) + "."


def load_model(model: str) -> tuple[Any, Any]:
    """(model, tokenizer) of an offline name, a folder or a ``.gguf`` file (fp32, eval mode, pad token set)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechrl.models.hub import load_causal_lm, load_tokenizer

    path = Path(model)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        lm = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return lm.eval(), tok
    return load_causal_lm(model).eval(), load_tokenizer(model)


def measure(judge: LocalJudge, prompts: list[str], continuations: dict[str, list[str]]) -> dict[str, Any]:
    """Mean score per condition, pairwise accuracies, unscored count and seconds per judgement."""
    scores: dict[str, list[float | None]] = {}
    unscored, seconds = 0, 0.0
    for cond in CONDITIONS:
        start = time.perf_counter()
        scores[cond] = judge.score(prompts, continuations[cond])
        seconds += time.perf_counter() - start
        unscored += judge.last_stats.unscored

    def above(worse: str) -> float:
        wins = [t is not None and w is not None and t > w for t, w in zip(scores["true"], scores[worse])]
        return sum(wins) / len(wins)

    return {"mean": {c: round(mean_score(scores[c]), 3) for c in CONDITIONS},
            "true>other": round(above("other"), 3), "true>shuffled": round(above("shuffled"), 3),
            "unscored": unscored, "s_per_judgement": round(seconds / (len(prompts) * len(CONDITIONS)), 3),
            "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="offline name, from_pretrained folder or .gguf file")
    parser.add_argument("--mode", default="expected", choices=("expected", "boxed", "likelihood"))
    parser.add_argument("--prompts", type=int, default=30, help="stories (each scored in 3 conditions)")
    parser.add_argument("--seed", type=int, default=0, help="story and shuffle seed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256, help="generation budget in boxed mode")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, help="also write the result, with every score, to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, tokenizer = load_model(args.model)
    load_s = time.perf_counter() - start
    judge = LocalJudge(model, tokenizer, mode=args.mode, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens)
    prompts, continuations = separation_items(args.prompts, args.seed)
    result = {"model": args.model, "mode": args.mode, "prompts": args.prompts, "seed": args.seed,
              "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "load_s": round(load_s, 1),
              **measure(judge, prompts, continuations),
              "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    if args.out:
        args.out.write_text(json.dumps({**result, "prompts_text": prompts, "continuations": continuations},
                                       indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}))


if __name__ == "__main__":
    main()
