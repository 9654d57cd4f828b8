"""RL data selection (Tongyi): keep the examples RL can learn from.

* **length**: audio no longer than ``max_seconds`` (the paper: < 20 s);
* **hard cases**: two transcribers disagree (``transcribers``: Whisper tiny.en vs PocketSphinx, WER
  between their hypotheses ≥ ``hard_wer``), or the SFT policy itself errs (``policy``: its greedy WER
  against the closest reference ≥ ``hard_wer``);
* **keyword-rich**: at least ``min_keywords`` keywords.

Counts of what each filter removed are returned for the summary. When no candidate is hard, RL keeps
them all (``no_hard_cases`` in the counts, and a warning) rather than training on nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

from speechrl.config import doc
from speechrl.data.tasks import Example
from speechrl.text import sentence_wer


@dataclass
class SelectionConfig:
    max_seconds: float = doc("drop examples whose audio is longer than this", 20.0, gt=0)
    hard_cases: Literal["none", "transcribers", "policy"] = doc("how to find hard cases (none: keep all)", "none")
    hard_wer: float = doc("a case is hard when the disagreement/error WER is at least this", 0.1, ge=0)
    min_keywords: int = doc("keep examples with at least this many keywords", 0, ge=0)
    max_examples: int = doc("cap on the selected examples (0: no cap)", 0, ge=0)


def disagreement(examples: list[Example]) -> list[float]:
    """WER between Whisper tiny.en and PocketSphinx hypotheses of each example's audio."""
    from speechrl.audio import load_audio
    from speechrl.speech.transcribe import make_transcriber

    wavs = [load_audio(e.audio) for e in examples]
    a = make_transcriber("whisper-tiny").transcribe(wavs)
    b = make_transcriber("pocketsphinx").transcribe(wavs)
    return [sentence_wer(x, y) for x, y in zip(a, b)]


def select_rl_data(examples: list[Example], cfg: SelectionConfig, task: str, policy: Any = None,
                   feats: dict | None = None) -> tuple[list[Example], dict[str, int]]:
    counts = {"candidates": len(examples)}
    kept = [e for e in examples if e.duration <= cfg.max_seconds]
    counts["dropped_long"] = counts["candidates"] - len(kept)
    before = len(kept)
    kept = [e for e in kept if len(e.keywords) >= cfg.min_keywords]
    counts["dropped_few_keywords"] = before - len(kept)
    if cfg.hard_cases != "none" and kept:
        if cfg.hard_cases == "transcribers":
            errors = disagreement(kept)
        else:
            if policy is None or feats is None:
                raise ValueError("hard_cases='policy' needs the SFT policy and features")
            from speechrl.eval.speech_tasks import predict

            hyps = predict(policy, kept, feats, max_new_tokens=40, desc="hard-case mining")
            errors = [min(sentence_wer(r, h) for r in e.all_references) for e, h in zip(kept, hyps)]
        hard = [e for e, err in zip(kept, errors) if err >= cfg.hard_wer]
        if hard:
            counts["dropped_easy"] = len(kept) - len(hard)
            kept = hard
        else:  # nothing is hard: RL still has the (easy) candidates, and the summary says so
            counts["no_hard_cases"] = len(kept)
            print(f"speechrl: warning: selection.hard_cases: none of the {len(kept)} candidates has a WER of at "
                  f"least hard_wer={cfg.hard_wer:g}; RL trains on all of them (rl_selection.json: no_hard_cases)",
                  file=sys.stderr)
    if cfg.max_examples:
        kept = kept[: cfg.max_examples]
    counts["selected"] = len(kept)
    return kept, counts
