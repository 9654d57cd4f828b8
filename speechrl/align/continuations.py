"""Align-SLM step 1–2: speech prompts cut at a word end, N sampled continuations, and their transcripts.

**Prompts.** The paper prompts with ≈3 s of speech cut at a word end. Our phoneme units carry the
word boundaries themselves: hama's CTC output has a word-separator token, kept as unit
:data:`~speechrl.speech.units.WORD_BOUNDARY_ID`, so the words of an utterance are the runs of
non-boundary units between boundary units, and a word ends where the boundary after it is emitted
(durations are 50 fps frames, blank frames merged into the unit before them). :func:`cut_prompt`
keeps the first words whose end is ≤ ``max_seconds`` (at least one word; by default never all
of them, so something is left to continue) plus the boundary unit after the last one — the
prompt ends "between words", where the unit LM starts the next word.

*The prompt text* (what the judge reads) is exact when hama finds as many words as the transcript
has — about half of the synthetic corpus utterances. Otherwise (a function word merged into its
neighbour, a word split in two) it is approximated: the transcript's first j words, with j the
word count whose share of the transcript's letters is closest to the prompt's share of the phone
units. ``Prompt.exact_text`` says which case applied. A row without a transcript (your own audio-only
data) has no text to cut: :func:`transcribe_prompts` transcribes its audio up to the prompt's end.

**Continuations.** :func:`sample_continuations` samples N unit continuations per prompt from a
:class:`~speechrl.models.unit_lm.UnitLM` (SlamKit's reproduction settings: temperature 0.8,
top-k 25, 150 new units). :func:`transcribe_units` renders unit lists with a vocoder and transcribes
them (Piper + Whisper tiny offline), the text the AI judge scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from speechrl.speech.units import WORD_BOUNDARY_ID, Units, dedup


@dataclass
class Prompt:
    """A speech prompt: deduplicated units up to a word end, and the words spoken in it."""

    units: list[int]
    durations: list[int] = field(repr=False)
    text: str
    seconds: float
    num_words: int
    exact_text: bool  # hama's word count matched the transcript's (else the text is approximate)
    id: str = ""


def word_spans(ids: Sequence[int], boundary_id: int = WORD_BOUNDARY_ID) -> list[tuple[int, int]]:
    """``(start, end)`` unit index ranges of the words: maximal runs without a boundary unit."""
    spans, start = [], None
    for i, u in enumerate(ids):
        if u == boundary_id:
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(ids)))
    return spans


def _letters(word: str) -> int:
    return max(1, sum(ch.isalnum() for ch in word))


def prompt_words(text: str, spans: Sequence[tuple[int, int]], k: int, max_words: int) -> tuple[str, bool]:
    """The transcript words spoken in the first ``k`` of ``spans`` (see the module docstring)."""
    words = text.split()
    if not words:  # an audio-only row: no transcript (see transcribe_prompts)
        return "", False
    if len(words) == len(spans):
        return " ".join(words[:k]), True
    phones = [e - s for s, e in spans]
    share = sum(phones[:k]) / max(1, sum(phones))
    letters = np.cumsum([_letters(w) for w in words]) / sum(_letters(w) for w in words)
    j = 1 + int(np.argmin(np.abs(letters[:max(1, max_words)] - share)))
    return " ".join(words[:j]), False


def cut_prompt(units: Units, text: str, max_seconds: float = 3.0, leave_one_word: bool = True,
               id: str = "") -> Prompt | None:
    """The first words of ``units`` (deduplicated first) ending by ``max_seconds``; ``None`` when
    the utterance has no word."""
    units = dedup(units)
    ids, durs = units.ids, units.durations or [1] * len(units.ids)
    spans = word_spans(ids)
    if not spans:
        return None
    ends = np.cumsum(durs)  # ends[i]: frame after unit i
    word_end = [(ends[e - 1] if e > 0 else 0) / units.frame_rate for _, e in spans]
    limit = len(spans) - 1 if leave_one_word and len(spans) > 1 else len(spans)
    k = max(1, sum(1 for t in word_end[:limit] if t <= max_seconds))
    end = spans[k - 1][1]
    if end < len(ids) and ids[end] == WORD_BOUNDARY_ID:
        end += 1  # the boundary after the last word: the prompt stops between words
    n_text = len(text.split())
    words, exact = prompt_words(text, spans, k, n_text - 1 if leave_one_word and n_text > 1 else n_text)
    return Prompt(ids[:end], list(durs[:end]), words, float(word_end[k - 1]), k, exact, id)


def corpus_prompts(rows: Sequence[dict[str, Any]], features: dict[str, dict[str, Any]], max_seconds: float = 3.0,
                   leave_one_word: bool = True) -> list[Prompt]:
    """Prompts of manifest rows from their cached unit features (rows without features or words skipped)."""
    out = []
    for r in rows:
        f = features.get(r["id"])
        if f is None:
            continue
        units = Units(f["ids"].tolist(), f["durations"].tolist(), "phoneme")
        p = cut_prompt(units, r["text"], max_seconds, leave_one_word, r["id"])
        if p is not None:
            out.append(p)
    return out


def transcribe_prompts(prompts: Sequence[Prompt], rows: dict[str, dict[str, Any]], transcriber: Any) -> list[Prompt]:
    """``prompts`` with a text for those of audio-only rows (``rows``: id → manifest row; no transcript):
    the words the row's audio speaks up to the prompt's end, as ``transcriber`` hears them (not exact).
    Prompts that have a text are returned as they are."""
    from speechrl.audio import SAMPLE_RATE, load_audio

    todo = [i for i, p in enumerate(prompts) if not p.text]
    out = list(prompts)
    if not todo:
        return out
    wavs = []
    for i in todo:
        row = rows[prompts[i].id]
        wav = load_audio(row["audio"], raw_sample_rate=row.get("raw_sample_rate"))
        wavs.append(wav[: round(prompts[i].seconds * SAMPLE_RATE)])
    for i, text in zip(todo, transcriber.transcribe(wavs)):
        out[i] = replace(out[i], text=text.strip())
    return out


def sample_continuations(unit_lm: Any, prompts: Sequence[Prompt | Sequence[int]], n: int = 5,
                         temperature: float = 0.8, top_k: int = 25, top_p: float = 1.0, max_new_tokens: int = 150,
                         seed: int = 0, batch_size: int = 64) -> list[list[list[int]]]:
    """``n`` continuations (unit id lists) per prompt from ``unit_lm`` (a UnitLM), seeded."""
    ids = [p.units if isinstance(p, Prompt) else list(p) for p in prompts]
    return unit_lm.generate(ids, n=n, temperature=temperature, top_k=top_k, top_p=top_p,
                            max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)


def transcribe_units(vocoder: Any, transcriber: Any, unit_lists: Sequence[Units | Sequence[int]],
                     progress: str = "") -> list[str]:
    """Render each unit list (ids, or :class:`Units` with durations) and transcribe the batch; one
    string per list, in order. Nothing speakable (e.g. only word boundaries) gives ``""``.
    ``progress``: label of the rendering and transcription progress bars (none when empty)."""
    units = [u if isinstance(u, Units) else Units(list(u), None, vocoder.unit_kind) for u in unit_lists]
    wavs: list[np.ndarray] = []
    with tqdm(total=len(units), desc=f"{progress}: vocode", unit="clip", disable=not progress) as bar:
        for start in range(0, len(units), 16):  # in chunks, for the bar (a vocoder may batch within one)
            wavs += vocoder.render_batch(units[start:start + 16])
            bar.update(min(16, len(units) - start))
    silent = np.zeros(0, dtype=np.float32)  # the transcriber maps empty clips to "" (no hallucination)
    wavs = [w if w.size and np.abs(w).max() > 0 else silent for w in wavs]
    return transcriber.transcribe(wavs, progress=f"{progress}: transcribe") if progress else transcriber.transcribe(wavs)
