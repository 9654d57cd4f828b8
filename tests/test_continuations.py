"""Prompts cut at word ends, sampled continuations, and the units → audio → text round trip."""

import pytest

from speechrl.align.continuations import (
    Prompt,
    corpus_prompts,
    cut_prompt,
    sample_continuations,
    transcribe_units,
    word_spans,
)
from speechrl.models.unit_lm import UnitLM
from speechrl.speech.units import WORD_BOUNDARY_ID as WB, Units, dedup
from speechrl.text import wer


def test_prompt_stops_at_the_last_word_ending_in_time():
    # leading silence, then words "ab" (ends 0.5 s), "cde" (1.4 s), "f" (2.4 s), "gh" (3.4 s); 50 fps
    ids = [WB, 1, 2, WB, 3, 4, 5, WB, 6, WB, 7, 8, WB]
    durs = [10, 5, 10, 10, 10, 10, 15, 10, 40, 10, 20, 20, 10]
    units = Units(ids, durs, "phoneme")
    assert word_spans(ids) == [(1, 3), (4, 7), (8, 9), (10, 12)]
    p = cut_prompt(units, "Ab cde, f gh.", max_seconds=3.0)
    assert p.units == ids[:10] and p.durations == durs[:10]  # three words + the boundary after them
    assert (p.text, p.num_words, p.seconds, p.exact_text) == ("Ab cde, f", 3, 2.4, True)
    assert cut_prompt(units, "Ab cde, f gh.", max_seconds=1.0).text == "Ab"  # at least one word
    assert cut_prompt(units, "Ab cde, f gh.", max_seconds=9.0).num_words == 3  # one word left to continue
    assert cut_prompt(units, "Ab cde, f gh.", max_seconds=9.0, leave_one_word=False).units == ids
    assert cut_prompt(Units([WB], [5], "phoneme"), "", 3.0) is None
    # hama found 4 words, the transcript has 5: the text follows the share of phones (6 of 8 ≈ 3 words)
    approx = cut_prompt(units, "Ab cde f g h.", max_seconds=3.0)
    assert approx.text == "Ab cde f" and not approx.exact_text
    # an audio-only row (no transcript): the same cut, no text (transcribe_prompts hears it from the audio)
    silent = cut_prompt(units, "", max_seconds=3.0)
    assert silent.units == p.units and (silent.text, silent.exact_text) == ("", False)


def test_corpus_prompts_are_word_prefixes_of_real_utterances(unit_features):
    rows, feats = unit_features
    prompts = corpus_prompts(rows, feats, max_seconds=1.5)
    assert len(prompts) == len(rows)
    for p, r in zip(prompts, rows):
        words = r["text"].split()
        assert words[: len(p.text.split())] == p.text.split() and len(p.text.split()) < len(words)
        assert p.seconds <= 1.5 or p.num_words == 1
        assert p.units[-1] == WB and dedup(Units(p.units, p.durations)).ids == p.units
    assert sum(p.exact_text for p in prompts) >= len(prompts) // 3


def test_sample_continuations_gives_n_unit_sequences_per_prompt(unit_features):
    rows, feats = unit_features
    prompts = corpus_prompts(rows[:3], feats)
    lm = UnitLM.from_scratch(num_units=190, hidden_size=32, layers=2, heads=2)
    out = sample_continuations(lm, prompts, n=5, max_new_tokens=20, seed=1)
    assert [len(o) for o in out] == [5, 5, 5] and all(len(c) == 20 for o in out for c in o)
    assert all(0 <= u < 190 for o in out for c in o for u in c)
    assert out == sample_continuations(lm, [p.units for p in prompts], n=5, max_new_tokens=20, seed=1)


@pytest.fixture(scope="module")
def speech_stack():
    from speechrl.speech.transcribe import make_transcriber
    from speechrl.speech.vocoder import make_vocoder

    return make_vocoder("piper"), make_transcriber("whisper-tiny")


def test_units_to_audio_to_text_round_trip_on_real_utterances(unit_features, speech_stack):
    rows, feats = unit_features
    picked = [r for r in rows if r["voice"] == "piper-joe"][:2]
    assert len(picked) == 2
    units = [dedup(Units(feats[r["id"]]["ids"].tolist(), feats[r["id"]]["durations"].tolist(), "phoneme"))
             for r in picked]
    prompt = cut_prompt(units[0], picked[0]["text"], max_seconds=1.5)
    texts = transcribe_units(*speech_stack, units + [units[1].ids, Units(prompt.units, prompt.durations, "phoneme"),
                                                     [WB, WB]])
    assert len(texts) == 5
    # mostly the right words, with durations (0, 1) and from ids alone (2), as sampled continuations are
    assert wer([r["text"] for r in picked] + [picked[1]["text"]], texts[:3]) < 0.4
    assert wer([prompt.text], [texts[3]]) < 0.5
    assert texts[4] == ""  # nothing speakable
    assert transcribe_units(*speech_stack, [units[1], [WB, WB]], progress="feedback") == [texts[1], ""]  # with bars
