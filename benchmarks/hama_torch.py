"""hama phoneme units: hama's own engine against its weights run in PyTorch (``speechrl.speech.units.hama_torch``).

    python benchmarks/hama_torch.py [--sentences 120]

Clips: grammar story sentences (2–4 s) spoken by the corpus's four training voices at its three speeds,
what a corpus, the minimal-pair sets and the long-form stories encode. Each engine encodes the same clips
in one process on one thread (the way a unit-building worker runs); engines alternate every repeat, the
first ``--warmup`` not counted, medians reported. Ratio = engine time ÷ PyTorch time (> 1: faster).
Agreement: the share of 20-ms frames with the same CTC id, and of clips with the same unit sequence.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub
import numpy as np
import torch

from speechrl.config import doc
from speechrl.corpus.grammar import fresh_stories
from speechrl.speech.synthesize import get_voice, synthesize
from speechrl.speech.units.phoneme import PhonemeUnitTokenizer, ctc_frames_to_units


@dataclass
class Args:
    sentences: int = doc("clips (grammar story sentences)", 120)
    voices: list[str] = doc("voices, in turn", default_factory=lambda: [
        "piper-joe", "espeak-us-m6", "espeak-us-m1", "espeak-gb-m6"])
    speeds: list[float] = doc("speaking rates, in turn", default_factory=lambda: [0.9, 1.0, 1.1])
    repeats: int = doc("timed passes per engine, after the warm-up", 2)
    warmup: int = doc("passes per engine run first and not counted", 1)
    seed: int = doc("seed of the stories", 11)
    out: str = doc("result file (default benchmarks/results/hama_torch.json)", "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    torch.set_num_threads(1)
    texts = [s.text for st in fresh_stories(args.sentences, args.seed, set()) for s in st.sentences][:args.sentences]
    wavs = [synthesize(t, get_voice(args.voices[i % len(args.voices)]), speed=args.speeds[i % len(args.speeds)])
            for i, t in enumerate(texts)]
    engines = {"hama": PhonemeUnitTokenizer("hama"), "torch": PhonemeUnitTokenizer("torch")}
    times: dict[str, list[float]] = {e: [] for e in engines}
    frames: dict[str, list[list[int]]] = {}
    for rep in range(args.warmup + args.repeats):
        for name in (list(engines) if rep % 2 == 0 else list(engines)[::-1]):
            t0 = time.perf_counter()
            frames[name] = [engines[name].frame_ids(w) for w in wavs]
            if rep >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    pairs = list(zip(frames["hama"], frames["torch"]))
    agree = sum(int(np.sum(np.equal(a, b))) for a, b in pairs if len(a) == len(b)) / sum(len(a) for a, _ in pairs)
    same_units = sum(ctc_frames_to_units(a).ids == ctc_frames_to_units(b).ids for a, b in pairs) / len(pairs)
    seconds = [w.size / 16000 for w in wavs]
    summary = {name: {"seconds": common.median(t), "s_per_clip": common.median(t) / len(wavs),
                      "ratio": common.median(times["hama"]) / common.median(t)} for name, t in times.items()}
    print(f"{len(wavs)} clips, {min(seconds):.1f}–{max(seconds):.1f} s ({sum(seconds):.0f} s of speech)")
    print(common.table([[n, f"{s['seconds']:.2f}", f"{s['s_per_clip']:.4f}", f"{s['ratio']:.2f}"] for n, s in summary.items()],
                       ["engine", "time s", "s a clip", "hama ÷ engine"]))
    print(f"same frame ids {agree:.5f}, same unit sequences {same_units:.3f}")
    result = {"args": asdict(args), "machine": common.machine(1), "clip_seconds": [min(seconds), max(seconds)],
              "times": times, "summary": summary, "frame_agreement": agree, "same_units": same_units}
    print("wrote", common.write_result("hama_torch", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
