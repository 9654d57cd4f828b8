"""Rollout time at G samples per prompt: encode the audio once and repeat the encoding, or repeat the audio.

    python benchmarks/rollout_encode_once.py [--repeats 5] [--prompts 4] [--group-size 8] ...

The policy is a :class:`~speechrl.models.speech_lm.SpeechLM` whose front end is
:class:`~speechrl.models.frontends.MelFrontEnd` (log-mel → strided convs → transformer → projector:
an encoder with a real cost) over a tiny random LM with the SmolLM2 tokenizer. The prompts are real
speech: ``--prompts`` sentences synthesized with ``piper-joe`` and featurized by the front end.

One rollout of B prompts × G samples, three ways (all sampled, ``max_new_tokens`` each):

- ``encode_once``: ``policy.encode`` on the B prompts, ``Encoded.repeat(G)``, ``generate``, decode —
  step for step what :func:`speechrl.trainers.grpo.rollout` does;
- ``naive``: the B prompts' features repeated G times, ``policy.encode`` on B·G prompts, ``generate``,
  decode — what a trainer that treats each sample as its own prompt (e.g. TRL's repeat sampler) does;
- ``rollout()``: the trainer's own function, as a check that ``encode_once`` is what it costs.

Encode and generate are timed separately (``torch.no_grad``, eval mode), the modes alternate order
every repeat, the first ``--warmup`` repeats are not counted, and medians are reported. The ratio is
naive ÷ encode-once rollout time (> 1: encoding once saves that factor). Before timing, the script
checks that both ways give the same prompt embeddings for every sample.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import torch

from speechrl.config import doc
from speechrl.data.tasks import INSTRUCTIONS, Example
from speechrl.models.frontends import MelFrontEnd
from speechrl.models.hub import load_tokenizer
from speechrl.models.policy import PromptBatch, completion_mask, decode
from speechrl.models.speech_lm import SpeechLM
from speechrl.speech.synthesize import get_voice, synthesize
from speechrl.trainers.grpo import SpeechGRPOConfig, rollout

SENTENCES = [
    "The red fox ran home before the rain.", "A small boat drifted across the quiet lake.",
    "My sister bakes bread every Sunday morning.", "The old clock in the hall stopped at noon.",
    "Two dogs chased a ball along the beach.", "He forgot his keys on the kitchen table.",
    "The children sang a song about the moon.", "A cold wind blew through the open window.",
]
MODES = ("encode_once", "naive", "rollout()")


@dataclass
class Args:
    repeats: int = doc("timed rollouts per mode, after the warm-up", 5)
    warmup: int = doc("rollouts per mode run first and not counted", 1)
    prompts: int = doc("B: prompts (synthesized sentences) per rollout", 4)
    group_size: int = doc("G: samples per prompt", 8)
    max_new_tokens: int = doc("completion cap", 24)
    voice: str = doc("speechrl voice for the prompts", "piper-joe")
    encoder_dim: int = doc("MelFrontEnd width (its default: 256)", 256)
    encoder_layers: int = doc("MelFrontEnd transformer layers (its default: 2)", 2)
    arch: str = doc("llama | qwen2: the tiny random LM", "llama")
    hidden: int = doc("LM hidden size", 64)
    layers: int = doc("LM decoder layers", 2)
    threads: int = doc("torch intra-op threads", 1)
    seed: int = doc("seed for the model and sampling", 0)
    out: str = doc("result file (default benchmarks/results/rollout_encode_once.json)", "")


def timed_rollout(policy: SpeechLM, batch: PromptBatch, g: int, max_new_tokens: int, encode_once: bool):
    """(encode seconds, generate+decode seconds, ids) of one rollout of len(batch.text) × g samples."""
    t0 = time.perf_counter()
    if encode_once:
        enc = policy.encode(batch).repeat(g)
    else:
        enc = policy.encode(PromptBatch([a for a in batch.audio for _ in range(g)],
                                        [t for t in batch.text for _ in range(g)]))
    t1 = time.perf_counter()
    ids = policy.generate(enc, max_new_tokens, do_sample=True)
    decode(policy.tokenizer, ids, completion_mask(ids, policy.eos_token_id))
    return t1 - t0, time.perf_counter() - t1, ids


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    if args.prompts > len(SENTENCES):
        raise SystemExit(f"--prompts ≤ {len(SENTENCES)}")
    common.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = load_tokenizer("smollm2-135m")
    lm = common.tiny_lm(len(tokenizer), args.arch, args.hidden, args.layers, args.seed)
    front_end = MelFrontEnd(lm.config.hidden_size, dim=args.encoder_dim, layers=args.encoder_layers)
    policy = SpeechLM(lm, tokenizer, front_end, {"kind": "mel", "dim": args.encoder_dim,
                                                 "layers": args.encoder_layers}).eval()

    voice = get_voice(args.voice)
    sentences = SENTENCES[: args.prompts]
    t0 = time.perf_counter()
    wavs = [synthesize(s, voice) for s in sentences]
    synth_s = time.perf_counter() - t0
    feats = {f"u{i}": policy.featurize(w) for i, w in enumerate(wavs)}
    examples = [Example(id=f"u{i}/asr", utterance_id=f"u{i}", task="asr", instruction=INSTRUCTIONS["asr"], reference=s)
                for i, s in enumerate(sentences)]
    batch = PromptBatch([feats[e.utterance_id] for e in examples], [e.instruction for e in examples])
    g = args.group_size
    cfg = SpeechGRPOConfig(group_size=g, max_new_tokens=args.max_new_tokens)

    with torch.no_grad():
        once, naive = policy.encode(batch).repeat(g), policy.encode(PromptBatch(
            [a for a in batch.audio for _ in range(g)], [t for t in batch.text for _ in range(g)]))
        same = torch.equal(once["mask"], naive["mask"]) and torch.allclose(once["embeds"], naive["embeds"], atol=1e-5)
        if not same:
            raise AssertionError("encode-once and naive prompt embeddings differ")
        audio_embeddings = int(policy.front_end(**policy.front_end.collate(batch.audio))[1].sum())
        prompt_width = once["embeds"].shape[1]

        times: dict[str, list[tuple[float | None, float]]] = {m: [] for m in MODES}  # (encode s, rest s)
        new_tokens: dict[str, list[int]] = {m: [] for m in MODES}
        torch.manual_seed(args.seed)
        for r in range(args.warmup + args.repeats):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                if mode == "rollout()":
                    t0 = time.perf_counter()
                    ids = rollout(policy, examples, feats, cfg).ids
                    enc_s, gen_s = None, time.perf_counter() - t0  # not split: it is the trainer's code
                else:
                    enc_s, gen_s, ids = timed_rollout(policy, batch, g, args.max_new_tokens, mode == "encode_once")
                if r >= args.warmup:
                    times[mode].append((enc_s, gen_s))
                    new_tokens[mode].append(ids.shape[1])

    summary: dict[str, Any] = {}
    for mode in MODES:
        total_ms = common.median([1000 * ((e or 0.0) + rest) for e, rest in times[mode]])
        enc_ms = None if mode == "rollout()" else common.median([1000 * e for e, _ in times[mode]])
        summary[mode] = {"rollout_ms": total_ms, "encode_ms": enc_ms,
                         "encoder_share": None if enc_ms is None else enc_ms / total_ms,
                         "new_tokens": common.median(new_tokens[mode])}
    summary["ratio_naive_over_encode_once"] = summary["naive"]["rollout_ms"] / summary["encode_once"]["rollout_ms"]
    summary["encode_ratio_naive_over_once"] = summary["naive"]["encode_ms"] / summary["encode_once"]["encode_ms"]

    rows = [[m, f"{s['rollout_ms']:.1f}",
             "-" if s["encode_ms"] is None else f"{s['encode_ms']:.1f}",
             "-" if s["encode_ms"] is None else f"{s['encoder_share']:.1%}", f"{s['new_tokens']:.0f}"]
            for m, s in ((m, summary[m]) for m in MODES)]
    print(common.table(rows, ["mode", "ms/rollout", "encode ms", "encoder share", "new tokens"]))
    print(f"\n{args.prompts} prompts × G={g}: {sum(len(w) for w in wavs) / 16000:.1f} s of audio, "
          f"{audio_embeddings} audio embeddings, prompt width {prompt_width}")
    print(f"ratio naive / encode-once: {summary['ratio_naive_over_encode_once']:.3f} per rollout, "
          f"{summary['encode_ratio_naive_over_once']:.2f} for the encoder alone (> 1: encoding once is faster)")
    result = {"benchmark": "rollout_encode_once", "args": asdict(args),
              "audio_s": [round(len(w) / 16000, 3) for w in wavs], "synthesis_s": round(synth_s, 2),
              "audio_embeddings": audio_embeddings, "prompt_width": prompt_width,
              "encoder_params": sum(p.numel() for p in front_end.parameters()),
              "lm_params": sum(p.numel() for p in lm.parameters()),
              "machine": common.machine(args.threads), "summary": summary,
              "times_s": {m: [list(t) for t in times[m]] for m in MODES}}
    path = common.write_result("rollout_encode_once", result, args.out or None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
