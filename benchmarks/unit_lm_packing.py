"""Unit-LM training steps without padding: packed pretraining rows and DPO pairs that share their prompt.

    python benchmarks/unit_lm_packing.py [--repeats 5] [--threads 2] ...

The model is the Align-SLM recipe's: SmolLM2-135M cut to ``--layers`` decoder layers, ``--units`` unit rows
(the recipe's word tokens). Sequence lengths come from the story grammar, in words (one token a word, as
``model.tokens: words`` reads speech), mixed as in the recipe: 0.9 corpus sentences a story, each long-form
story twice (speech and text).

- **pretrain**: one forward + backward of the mean next-unit NLL of ``--batch`` sequences, either right-padded
  to the longest (:meth:`UnitLM.pack`, the layout before) or packed into rows as wide as the longest (or ``--width``) with
  restarting position ids (:meth:`UnitLM.pack_rows`, what :func:`~speechrl.trainers.unit_lm.unit_lm_loss` does).
- **dpo**: one DPO step's model work on ``--pairs`` context pairs (prompt = a story but its last sentence,
  two continuations of ``--continuation`` tokens): the reference forward (LoRA off, no grad) and the policy
  forward + backward, either as 2N rows prompt + continuation (before) or as N rows prompt + chosen +
  rejected under a 4-D mask (:meth:`UnitLM.branch_logps`, what :func:`~speechrl.trainers.dpo.pair_logps` does).

Modes alternate every repeat, the first ``--warmup`` are not counted, medians are reported; before timing the
script checks that both layouts give the same loss / log-probs. Ratio = before ÷ after (> 1: faster).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import torch

from speechrl.config import doc
from speechrl.corpus.grammar import fresh_stories
from speechrl.models.unit_lm import UnitLM
from speechrl.trainers.dpo import pair_logps, prepare_policy
from speechrl.trainers.lora import LoRAConfig


@dataclass
class Args:
    repeats: int = doc("timed steps per layout, after the warm-up", 5)
    warmup: int = doc("steps per layout run first and not counted", 1)
    layers: int = doc("SmolLM2-135M decoder layers kept (the recipe: 6)", 6)
    units: int = doc("unit rows (the recipe's word tokens: a few hundred)", 400)
    batch: int = doc("pretraining sequences a step (the recipe: 16)", 16)
    width: int = doc("packed row width (0: the longest sequence's, as the trainer packs)", 0)
    pairs: int = doc("DPO pairs a step (the recipe: 8)", 8)
    batches: int = doc("different random batches, each timed in every repeat (times are per batch)", 6)
    continuation: int = doc("tokens of each DPO continuation (the recipe: ≈ 15 words)", 15)
    threads: int = doc("torch intra-op threads", 2)
    seed: int = doc("seed for the lengths and tokens", 0)
    out: str = doc("result file (default benchmarks/results/unit_lm_packing.json)", "")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    common.set_threads(args.threads)
    rng = random.Random(args.seed)
    stories = fresh_stories(300, args.seed, set())
    story_len = [sum(len(s.text.split()) for s in st.sentences) for st in stories]
    sentences = [len(s.text.split()) for st in stories for s in st.sentences]
    pool = sentences[: len(stories) * 9 // 10] + story_len * 2  # the recipe: ≈ 900 corpus sentences, 1,000 stories × 2
    model = UnitLM.create("smollm2-135m", args.units, args.layers, seed=args.seed)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(args.units) for _ in range(n)]

    batches = [[tokens(n) for n in rng.sample(pool, args.batch)] for _ in range(args.batches)]

    def pretrain(packed: bool, batch: list[list[int]]) -> torch.Tensor:
        if packed:
            ids, pos, score = model.pack_rows(batch, args.width)
            logps, mask = model.token_logps(ids, None, score, position_ids=pos)
        else:
            ids, attn, score = model.pack([[] for _ in batch], batch)
            logps, mask = model.token_logps(ids, attn, score)
        loss = -(logps * mask).sum() / mask.sum()
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    def measure(name: str, fn: Callable[[bool, Any], torch.Tensor], inputs: list[Any]) -> dict[str, list[float]]:
        """Seconds of the whole list of inputs, per layout and repeat."""
        for x in inputs:
            before, after = fn(False, x), fn(True, x)
            if not torch.allclose(before, after, atol=1e-4):
                raise AssertionError(f"{name}: the layouts differ: {before} vs {after}")
        out: dict[str, list[float]] = {"before": [], "after": []}
        for rep in range(args.warmup + args.repeats):
            for side in (("before", "after") if rep % 2 else ("after", "before")):
                t = timed(lambda: [fn(side == "after", x) for x in inputs])
                if rep >= args.warmup:
                    out[side].append(t / len(inputs))
        return out

    times = {"pretrain": measure("pretrain loss", pretrain, batches)}
    prepare_policy(model, LoRAConfig(r=32, alpha=8))  # DPO trains a LoRA adapter; the reference is the base
    pair_batches = [[(tokens(story_len[i] - len(stories[i].sentences[-1].text.split())), tokens(args.continuation),
                      tokens(args.continuation)) for i in rng.sample(range(len(stories)), args.pairs)]
                    for _ in range(args.batches)]

    def two_rows(pairs: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [p for p, _, _ in pairs]
        lp = model.sequence_logps(prompts + prompts, [c for _, c, _ in pairs] + [r for _, _, r in pairs])
        return lp[: len(pairs)], lp[len(pairs):]

    def dpo(shared: bool, pairs: list[tuple]) -> torch.Tensor:
        logps = (lambda: pair_logps(model, pairs)) if shared else (lambda: two_rows(pairs))
        with torch.no_grad(), model.lm.disable_adapter():
            ref = logps()
        pol = logps()
        (pol[0].sum() - pol[1].sum()).backward()
        model.zero_grad(set_to_none=True)
        return torch.cat(pol).detach() - torch.cat(ref)

    times["dpo"] = measure("dpo log-ratios", dpo, pair_batches)
    padded = sum(args.batch * (max(map(len, b)) + 1) for b in batches) / len(batches)  # + BOS each
    packed = sum(model.pack_rows(b, args.width)[0].numel() for b in batches) / len(batches)
    prompt_tokens = sum(len(p) + 1 for b in pair_batches for p, _, _ in b) / len(pair_batches)
    summary = {case: {"before_s": common.median(t["before"]), "after_s": common.median(t["after"]),
                      "ratio": common.median(t["before"]) / common.median(t["after"])} for case, t in times.items()}
    summary["pretrain"]["tokens"] = {"padded": round(padded), "packed": round(packed)}
    summary["dpo"]["tokens"] = {"two_rows": round(2 * prompt_tokens + 2 * args.pairs * args.continuation),
                                "shared": round(prompt_tokens + 2 * args.pairs * args.continuation)}
    print(common.table([[c, f"{s['before_s']:.3f}", f"{s['after_s']:.3f}", f"{s['ratio']:.2f}",
                         " → ".join(map(str, s["tokens"].values()))] for c, s in summary.items()],
                       ["step", "before s", "after s", "before ÷ after", "tokens"]))
    result = {"args": asdict(args), "machine": common.machine(args.threads), "times": times, "summary": summary}
    print("wrote", common.write_result("unit_lm_packing", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
