"""Whisper tiny.en as a GRPO policy: encode once vs repeat the audio (rollout at G = 8), and an SFT step
with the frozen encoder's cached outputs vs recomputed.

    python benchmarks/whisper_encode_once.py [--repeats 3] [--prompts 4] [--group-size 8] [--profile 15] ...

The policy is the real Whisper tiny.en, converted offline from the CTranslate2 weights
(``load_policy("whisper-tiny.en")``); its prompts are real speech (``--prompts`` sentences synthesized
with ``--voice``). Side by side in one run:

- ``encode_once``: ``encode`` B clips → ``Encoded.repeat(G)`` → ``generate`` (sampled) → decode: what
  :func:`speechrl.trainers.grpo.rollout` does. The G samples of a clip share its encoder output and its
  cross-attention keys/values, attended to without per-row copies
  (:class:`~speechrl.models.native.whisper_decoder.SharedClipDecoder`).
- ``naive``: the B clips' features repeated G times → ``encode`` B·G clips → ``generate`` → decode: what
  a trainer that treats each sample as its own prompt does (encoder and cross-attention K/V per row;
  the same decoding loop and sampler, so only the sharing differs).
- ``sft_cached`` / ``sft_recomputed``: one SFT step (forward + backward of the reference NLL, encoder
  frozen, decoder trained) on ``--sft-batch`` clips, reading the encoder outputs cached by
  :func:`speechrl.data.features.cached_encodings` or running the encoder.

Before timing, greedy decoding of both rollout ways is checked to give the same tokens. Both modes of a
repeat sample with the same seed, so they draw the same completions and decode as many steps (the
decode widths are reported). Modes alternate order every repeat, the first ``--warmup`` repeats are not counted, medians are reported; ratios are
naive ÷ encode-once and recomputed ÷ cached (> 1: the first is slower by that factor).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import torch
from rollout_encode_once import SENTENCES

from speechrl.config import doc
from speechrl.data.features import cached_encodings
from speechrl.data.tasks import INSTRUCTIONS, Example
from speechrl.models.native import load_policy
from speechrl.models.policy import PromptBatch, completion_mask, decode
from speechrl.speech.synthesize import get_voice, synthesize
from speechrl.trainers.sft import sft_nll

ROLLOUT_MODES = ("encode_once", "naive")
SFT_MODES = ("sft_cached", "sft_recomputed")


@dataclass
class Args:
    policy: str = doc("the Whisper checkpoint (an offline name, hub id or folder)", "whisper-tiny.en")
    repeats: int = doc("timed runs per mode, after the warm-up", 3)
    warmup: int = doc("runs per mode first, not counted", 1)
    prompts: int = doc("B: prompts (synthesized sentences) per rollout", 4)
    group_size: int = doc("G: samples per prompt", 8)
    max_new_tokens: int = doc("completion cap", 32)
    sft_batch: int = doc("clips per SFT step", 8)
    voice: str = doc("speechrl voice for the prompts", "piper-joe")
    threads: int = doc("torch intra-op threads", 2)
    seed: int = doc("seed for sampling", 0)
    profile: int = doc("after timing, rollouts of each mode run under torch.profiler; its top N ops by self "
                       "CPU time are printed and saved (0: no profile)", 0)
    out: str = doc("result file (default benchmarks/results/whisper_encode_once.json)", "")


def timed_rollout(policy: Any, batch: PromptBatch, g: int, max_new_tokens: int,
                  once: bool) -> tuple[float, float, int]:
    """(encode s, generate + decode s, decode width: tokens of the longest row)."""
    t0 = time.perf_counter()
    if once:
        enc = policy.encode(batch).repeat(g)
    else:
        enc = policy.encode(PromptBatch([a for a in batch.audio for _ in range(g)],
                                        [t for t in batch.text for _ in range(g)]))
    t1 = time.perf_counter()
    ids = policy.generate(enc, max_new_tokens, do_sample=True)
    decode(policy.tokenizer, ids, completion_mask(ids, policy.eos_token_id))
    return t1 - t0, time.perf_counter() - t1, ids.shape[1]


def profile_rollout(policy: Any, batch: PromptBatch, g: int, max_new_tokens: int, once: bool, top: int,
                    seed: int) -> list:
    """One rollout under torch.profiler: its ``top`` ops by self CPU time (printed, and returned as
    [name, self ms, % of all ops' self CPU time, calls])."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        _, _, width = timed_rollout(policy, batch, g, max_new_tokens, once)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [[e.key, round(e.self_cpu_time_total / 1000, 1), round(100 * e.self_cpu_time_total / total, 1), e.count]
            for e in events[:top]]
    print(f"\nprofile, {'encode_once' if once else 'naive'} (decode width {width}; "
          f"{total / 1000:.0f} ms of self CPU time in ops):")
    print(common.table(rows, ["op", "self ms", "%", "calls"]))
    return rows


def timed_sft_step(policy: Any, examples: list[Example], feats: dict, optimizer: torch.optim.Optimizer) -> float:
    t0 = time.perf_counter()
    nll, tokens = sft_nll(policy, policy, examples, feats, 48)
    (nll / tokens).backward()
    optimizer.zero_grad()  # the step itself is the same either way; only the gradient matters here
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    common.set_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    policy = load_policy(args.policy).eval()
    policy.model.model.encoder.requires_grad_(False)
    voice = get_voice(args.voice)
    n = max(args.prompts, args.sft_batch)
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    wavs = [synthesize(s, voice, speed=1.0 + 0.05 * (i // len(SENTENCES))) for i, s in enumerate(sentences)]
    feats = {f"u{i}": policy.featurize(w) for i, w in enumerate(wavs)}
    examples = [Example(id=f"u{i}/asr", utterance_id=f"u{i}", task="asr", instruction=INSTRUCTIONS["asr"],
                        reference=s) for i, s in enumerate(sentences)]
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        cached = cached_encodings(folder, feats, policy)
        cache_s = time.perf_counter() - t0
    batch = PromptBatch([feats[e.utterance_id] for e in examples[: args.prompts]],
                        [e.instruction for e in examples[: args.prompts]])
    g = args.group_size

    with torch.no_grad():  # both ways decode the same tokens (greedy)
        once = policy.generate(policy.encode(batch).repeat(g), args.max_new_tokens)
        naive = policy.generate(policy.encode(PromptBatch([a for a in batch.audio for _ in range(g)],
                                                          [t for t in batch.text for _ in range(g)])), args.max_new_tokens)
        if not torch.equal(once, naive):
            raise AssertionError("encode-once and naive greedy rollouts differ")
        greedy = decode(policy.tokenizer, once[::g], completion_mask(once[::g], policy.eos_token_id))

    times: dict[str, list[Any]] = {m: [] for m in ROLLOUT_MODES + SFT_MODES}
    for r in range(args.warmup + args.repeats):
        for mode in (ROLLOUT_MODES if r % 2 == 0 else ROLLOUT_MODES[::-1]):
            torch.manual_seed(args.seed + r)  # both modes draw the same samples: the same decode width
            with torch.no_grad():
                t = timed_rollout(policy, batch, g, args.max_new_tokens, mode == "encode_once")
            if r >= args.warmup:
                times[mode].append(t)
    profiles = {mode: profile_rollout(policy, batch, g, args.max_new_tokens, mode == "encode_once", args.profile,
                                      args.seed) for mode in ROLLOUT_MODES} if args.profile else {}
    policy.train()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    sft_examples = examples[: args.sft_batch]
    for r in range(args.warmup + args.repeats):
        for mode in (SFT_MODES if r % 2 == 0 else SFT_MODES[::-1]):
            t = timed_sft_step(policy, sft_examples, cached if mode == "sft_cached" else feats, optimizer)
            if r >= args.warmup:
                times[mode].append(t)

    summary: dict[str, Any] = {}
    for mode in ROLLOUT_MODES:
        summary[mode] = {"rollout_ms": common.median([1000 * (e + rest) for e, rest, _ in times[mode]]),
                         "encode_ms": common.median([1000 * e for e, _, _ in times[mode]]),
                         "decode_widths": [w for _, _, w in times[mode]]}
    for mode in SFT_MODES:
        summary[mode] = {"step_ms": common.median([1000 * t for t in times[mode]])}
    summary["rollout_ratio_naive_over_encode_once"] = summary["naive"]["rollout_ms"] / summary["encode_once"]["rollout_ms"]
    summary["sft_ratio_recomputed_over_cached"] = summary["sft_recomputed"]["step_ms"] / summary["sft_cached"]["step_ms"]
    rows = [[m, f"{summary[m]['rollout_ms']:.0f}", f"{summary[m]['encode_ms']:.0f}",
             " ".join(map(str, summary[m]["decode_widths"]))] for m in ROLLOUT_MODES]
    print(common.table(rows, ["rollout", "ms/rollout", "encode ms", "decode widths"]))
    print(common.table([[m, f"{summary[m]['step_ms']:.0f}"] for m in SFT_MODES], ["sft step", "ms/step"]))
    print(f"\n{args.prompts} prompts × G={g}: ratio naive / encode-once "
          f"{summary['rollout_ratio_naive_over_encode_once']:.2f}; SFT step recomputed / cached "
          f"{summary['sft_ratio_recomputed_over_cached']:.2f} (caching {len(feats)} clips took {cache_s:.1f} s)")
    result = {"benchmark": "whisper_encode_once", "args": asdict(args), "greedy": greedy,
              "audio_s": [round(len(w) / 16000, 3) for w in wavs], "cache_s": round(cache_s, 2),
              "machine": common.machine(args.threads), "summary": summary, "profile": profiles,
              "times_s": {m: [list(t) if isinstance(t, tuple) else t for t in v] for m, v in times.items()}}
    path = common.write_result("whisper_encode_once", result, args.out or None)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
