"""Long-form pretraining speech for the unit LM: whole stories, each told by one voice.

A unit LM learns to use a story only from training sequences that hold one: the corpus's utterances are
single sentences (≈ 35 deduplicated units), so nothing in them rewards reading the sentences before. The
story grammar gives unlimited new stories (:func:`~speechrl.corpus.grammar.fresh_stories`, none telling
an evaluation story); each is spoken sentence by sentence by one voice at one speed drawn per story,
encoded into hama phoneme units and the sentences' units joined at a word boundary — the way the
story-cloze benchmarks build their members (:mod:`speechrl.align.minimal_pairs`), with the same cache
layout (``audio/<key>.wav``, ``units.safetensors``, ``rejected.jsonl``): a sentence is synthesized and
encoded once, whatever story or run asks for it again.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from speechrl.align.minimal_pairs import compute_units, joined_units, sentence_key
from speechrl.corpus.grammar import Story


def story_units(stories: Sequence[Story], voices: Sequence[str], speeds: Sequence[float], seed: int,
                folder: str | Path, workers: int = 2) -> dict[str, list[int]]:
    """Each story's deduplicated unit sequence (its sentences' units joined), by story id; a story whose
    sentence failed to synthesize or encode is left out (listed in ``<folder>/rejected.jsonl``). A story's
    voice and speed depend only on its place in ``stories``: its first sentences alone, in the same place,
    are told by the same voice (their units come from the cache)."""
    if not voices or not speeds:
        raise ValueError("need at least one voice and one speed")
    folder = Path(folder)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plan, jobs = [], []
    for story in stories:
        voice, speed = rng.choice(list(voices)), float(rng.choice(list(speeds)))
        keys = [sentence_key(s.text, voice, speed) for s in story.sentences]
        jobs += [(k, str(folder / "audio" / f"{k}.wav"), s.text, voice, speed) for k, s in zip(keys, story.sentences)]
        plan.append(keys)
    units, _ = compute_units(folder, jobs, workers, "story units")
    return {st.id: joined_units(units, keys) for st, keys in zip(stories, plan) if all(k in units for k in keys)}
