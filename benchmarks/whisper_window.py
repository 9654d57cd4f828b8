"""Whisper tiny.en (CTranslate2) on short clips: the encoder's 30 s window against shorter ones.

    python benchmarks/whisper_window.py [--sentences 120] [--windows [15, 10, 8]] [--threads 2]

Clips: grammar story sentences (2–4 s) spoken by five corpus voices, every second one heard as the
Align-SLM feedback hears a continuation (hama units → the Piper phoneme vocoder). Each window transcribes
the same clips with :class:`~speechrl.speech.transcribe.WhisperCT2Transcriber` (``window_s``; 30 = Whisper's
own); windows alternate every repeat, the first ``--warmup`` not counted, medians reported. Besides the
time: WER against the sentences and the share of transcripts equal (after normalisation) to the 30 s
window's. Ratio = 30 s time ÷ window time (> 1: faster).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import common  # first: sets HF_HUB_OFFLINE before anything loads the hub

from speechrl.config import doc
from speechrl.corpus.grammar import fresh_stories
from speechrl.speech.synthesize import get_voice, synthesize
from speechrl.speech.transcribe import WhisperCT2Transcriber
from speechrl.speech.vocoder import unit_roundtrip
from speechrl.text import normalize, wer


@dataclass
class Args:
    sentences: int = doc("clips (grammar story sentences)", 120)
    windows: list[float] = doc("windows compared with 30 s, seconds", default_factory=lambda: [15.0, 10.0, 8.0])
    voices: list[str] = doc("voices, in turn", default_factory=lambda: [
        "espeak-us-m3", "espeak-us-f2", "espeak-gb-m1", "piper-joe", "espeak-us-klatt4"])
    repeats: int = doc("timed passes per window, after the warm-up", 2)
    warmup: int = doc("passes per window run first and not counted", 1)
    threads: int = doc("CTranslate2 threads", 2)
    seed: int = doc("seed of the stories", 7)
    out: str = doc("result file (default benchmarks/results/whisper_window.json)", "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(Args, __doc__.split("\n")[0], argv)
    texts = [s.text for st in fresh_stories(args.sentences, args.seed, set()) for s in st.sentences][:args.sentences]
    wavs = []
    for i, text in enumerate(texts):
        wav = synthesize(text, get_voice(args.voices[i % len(args.voices)]))
        wavs.append(unit_roundtrip(wav) if i % 2 else wav)
    asr = {w: WhisperCT2Transcriber(cpu_threads=args.threads, window_s=w) for w in [30.0, *args.windows]}
    times: dict[float, list[float]] = {w: [] for w in asr}
    out: dict[float, list[str]] = {}
    for rep in range(args.warmup + args.repeats):
        for w in (list(asr) if rep % 2 == 0 else list(asr)[::-1]):
            t0 = time.perf_counter()
            out[w] = asr[w].transcribe(wavs)
            if rep >= args.warmup:
                times[w].append(time.perf_counter() - t0)
    refs, full = [normalize(t) for t in texts], [normalize(t) for t in out[30.0]]
    summary = {str(w): {"seconds": common.median(times[w]), "ratio": common.median(times[30.0]) / common.median(times[w]),
                        "wer": wer(refs, [normalize(t) for t in out[w]]),
                        "same_as_30s": sum(a == normalize(b) for a, b in zip(full, out[w])) / len(wavs)} for w in asr}
    seconds = [w.size / 16000 for w in wavs]
    print(f"{len(wavs)} clips, {min(seconds):.1f}–{max(seconds):.1f} s")
    print(common.table([[w, f"{s['seconds']:.1f}", f"{s['ratio']:.2f}", f"{s['wer']:.4f}", f"{s['same_as_30s']:.3f}"]
                        for w, s in summary.items()], ["window s", "time s", "30 s ÷ window", "WER", "same as 30 s"]))
    result = {"args": asdict(args), "machine": common.machine(args.threads), "clip_seconds": [min(seconds), max(seconds)],
              "times": {str(w): t for w, t in times.items()}, "summary": summary}
    print("wrote", common.write_result("whisper_window", result, args.out or None))
    return result


if __name__ == "__main__":
    main()
