"""speechrl.align.minimal_pairs and speechrl.align.zerospeech: the accuracy rule by hand, the offline
spoken sets built from the grammar (real eSpeak NG speech → real hama phoneme units), and the
ZeroSpeech 2021 / Spoken StoryCloze loaders on tiny folders in the real layouts.

The ZeroSpeech fixtures (``tests/fixtures/zerospeech/*/dev/gold.csv``) hold only the gold files; the
test speaks every row into ``<filename>.wav``. StoryCloze folders are written here.
"""

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import soundfile as sf

from speechrl.align import minimal_pairs as mp
from speechrl.align.minimal_pairs import (BENCHMARKS, MinimalPair, benchmark_texts, build_benchmark, encode_pairs,
                                          evaluate_minimal_pairs, likelihood_accuracy, pair_score,
                                          story_context_use)
from speechrl.align.zerospeech import load_sblimp, load_spoken_storycloze, load_swuggy

FIXTURES = Path(__file__).parent / "fixtures" / "zerospeech"
VOICE = "espeak-us-m6"  # fast and deterministic


# -- accuracy ------------------------------------------------------------------------------------

def test_pair_score_uses_length_normalised_nll_and_half_for_ties():
    assert pair_score((2.0, 2), (3.0, 2)) == 1.0   # 1.0 < 1.5 per token
    assert pair_score((2.0, 2), (3.0, 3)) == 0.5   # 1.0 == 1.0
    assert pair_score((4.0, 2), (1.0, 1)) == 0.0   # 2.0 > 1.0
    assert pair_score((9.0, 10), (1.0, 1)) == 1.0  # lower total is not what counts: 0.9 < 1.0
    with pytest.raises(ValueError, match="n_tokens"):
        pair_score((1.0, 0), (1.0, 1))


def test_likelihood_accuracy_hand_computed_and_batched():
    table = {(1, 2): (2.0, 2), (3, 4): (3.0, 2), (5,): (1.0, 1), (6, 7, 8): (3.0, 3), (9, 9): (4.0, 2), (10,): (1.0, 1)}
    calls = []

    def nll(seqs):
        calls.append(len(seqs))
        return [table[tuple(s)] for s in seqs]

    acc, scores = likelihood_accuracy([[1, 2], [5], [9, 9]], [[3, 4], [6, 7, 8], [10]], nll, batch_size=2)
    assert scores == [1.0, 0.5, 0.0] and acc == pytest.approx(0.5)
    assert calls == [2, 2, 2]  # one pair (two sequences) per call
    calls.clear()
    likelihood_accuracy([[1, 2], [5], [9, 9]], [[3, 4], [6, 7, 8], [10]], nll, batch_size=32)
    assert calls == [6]
    with pytest.raises(ValueError, match="returned 1 results"):
        likelihood_accuracy([[1, 2]], [[3, 4]], lambda seqs: [(1.0, 1)])
    with pytest.raises(ValueError, match="empty"):
        likelihood_accuracy([[]], [[3, 4]], nll)
    with pytest.raises(ValueError, match="no pairs"):
        likelihood_accuracy([], [], nll)
    with pytest.raises(ValueError, match="2 positives but 1"):
        likelihood_accuracy([[1], [2]], [[3]], nll)


def test_evaluate_minimal_pairs_groups_and_needs_units():
    pairs = [MinimalPair("a", "sblimp", "p.wav", "n.wav", group="x", positive_units=[1], negative_units=[2, 2]),
             MinimalPair("b", "sblimp", "p.wav", "n.wav", group="y", positive_units=[3, 3], negative_units=[4])]
    # NLL per token = the first unit id: pair a 1 < 2 → 1, pair b 3 < 4 → 1
    result = evaluate_minimal_pairs(pairs, lambda seqs: [(float(s[0]) * len(s), len(s)) for s in seqs])
    assert result["accuracy"] == 1.0 and result["n"] == 2 and result["by_group"] == {"x": 1.0, "y": 1.0}
    with pytest.raises(ValueError, match="encode_pairs"):
        evaluate_minimal_pairs([MinimalPair("c", "swuggy", "p.wav", "n.wav")], lambda s: [])


def test_story_context_use_by_hand():
    """A toy LM that copies: a unit costs 1 nat if it occurred earlier in the sequence, else 3."""
    def nll(seqs):
        return [(float(sum(1 if u in s[:i] else 3 for i, u in enumerate(s))), len(s)) for s in seqs]

    pairs = [MinimalPair("a", "tsc", "p.wav", "n.wav", positive_units=[4, 5, 4], negative_units=[4, 5, 6]),
             MinimalPair("b", "tsc", "p.wav", "n.wav", positive_units=[7, 8, 8], negative_units=[7, 7])]
    # a: whole 7/3 vs 9/3 → 1; given the context [4, 5] (6 nats): 1 vs 3 → 1; alone [4] vs [6]: 3 vs 3 → 0.5
    # b: whole 7/3 vs 4/2 → 0; given [7] (3 nats): 4 vs 1 → 0; alone [8, 8] vs [7]: 4 vs 3 → 0
    assert story_context_use(pairs, nll) == {"protocol": 50.0, "ending|context": 50.0, "ending alone": 25.0}
    with pytest.raises(ValueError, match="share no context"):
        story_context_use([MinimalPair("c", "tsc", "p.wav", "n.wav", positive_units=[1, 2], negative_units=[3])], nll)


# -- offline sets from the grammar ---------------------------------------------------------------

def test_benchmark_texts_support_200_pairs_of_each_kind():
    for name in BENCHMARKS:
        triples = benchmark_texts(name, 200, seed=0)
        assert len(triples) == 200, name
        assert all(pos != neg for pos, neg, _ in triples)
    ssc = benchmark_texts("ssc", 3, seed=0)
    tsc = benchmark_texts("tsc", 3, seed=0)
    assert ssc[0][0] == tsc[0][0]  # same story with its true ending
    assert ssc[0][0].split(". ")[:-1] == ssc[0][1].split(". ")[:-1]  # same context, other ending
    assert {g for _, _, g in ssc} <= {"name", "companion", "object", "place"}
    assert {g for _, _, g in benchmark_texts("sblimp", 12, 0)} >= {"a_an", "word_order"}
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmark_texts("salmon", 2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All four offline sets, a few pairs each, spoken by one eSpeak voice into one folder."""
    out = tmp_path_factory.mktemp("benchmarks")
    sets = {name: build_benchmark(name, out, n=n, seed=0, voices=(VOICE,), workers=1)
            for name, n in (("swuggy", 3), ("ssc", 1), ("tsc", 1))}
    sets["sblimp"] = build_benchmark("sblimp", out, n=2, seed=0, voices=(VOICE,), workers=2)  # the process pool
    return out, sets


def test_built_sets_have_real_deduplicated_phoneme_units(built):
    out, sets = built
    assert {k: len(v) for k, v in sets.items()} == {"swuggy": 3, "ssc": 1, "tsc": 1, "sblimp": 2}
    for name, pairs in sets.items():
        for p in pairs:
            assert p.kind == name and p.voice == VOICE and p.id.startswith(name + "-")
            assert Path(p.positive_audio).is_file() and Path(p.negative_audio).is_file()
            for units in (p.positive_units, p.negative_units):
                assert units and all(0 <= u < 190 for u in units)
                assert all(a != b for a, b in zip(units, units[1:]))  # deduplicated
            assert p.positive_units != p.negative_units
    story = sets["ssc"][0]
    assert len(story.positive_units) > 5 * len(sets["swuggy"][0].positive_units)  # a story vs a word
    assert sets["tsc"][0].positive_audio == story.positive_audio  # same text + voice → one file
    assert {p.group for p in sets["sblimp"]} <= {"subject_verb_agreement", "verb_form", "determiner_noun_agreement",
                                                  "a_an", "pronoun_case", "word_order"}
    record = json.loads((out / "swuggy.json").read_text())
    assert record["built"] == 3 and record["voices"] == [VOICE]
    assert record["pairs"][0]["positive_text"] == sets["swuggy"][0].positive_text
    assert not (out / "rejected.jsonl").exists()


def test_rebuild_reuses_audio_and_units(built, monkeypatch):
    out, sets = built

    def no_work(job):
        raise AssertionError(f"recomputed {job}")

    monkeypatch.setattr(mp, "_unit_job", no_work)
    again = build_benchmark("swuggy", out, n=3, seed=0, voices=(VOICE,), workers=1)
    assert [(p.positive_units, p.negative_units) for p in again] == \
           [(p.positive_units, p.negative_units) for p in sets["swuggy"]]


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(KeyError, match="unknown voice"):
        build_benchmark("swuggy", tmp_path, n=1, voices=("nobody",))
    with pytest.raises(ValueError, match="at least one voice"):
        build_benchmark("swuggy", tmp_path, n=1, voices=())


# -- ZeroSpeech 2021 and Spoken StoryCloze loaders -----------------------------------------------

def _speak_gold(folder: Path) -> None:
    """Write <filename>.wav for every gold.csv row: its text spoken by eSpeak NG."""
    import csv

    from speechrl.audio import save_audio
    from speechrl.speech.synthesize import get_voice, synthesize

    with (folder / "gold.csv").open() as f:
        for row in csv.DictReader(f):
            text = row.get("word") or row.get("transcription") or row["phones"].replace(" ", "")
            save_audio(folder / f"{row['filename']}.wav", synthesize(text, get_voice(VOICE)))


@pytest.fixture(scope="module")
def zr2021(tmp_path_factory):
    root = tmp_path_factory.mktemp("zr2021")
    shutil.copytree(FIXTURES, root, dirs_exist_ok=True)
    for task in ("lexical", "syntactic"):
        _speak_gold(root / task / "dev")
    return root


def test_load_swuggy(zr2021):
    pairs = load_swuggy(zr2021, "dev")
    assert [p.id for p in pairs] == ["1/Alex", "1/Victoria", "2/Alex"]
    first = pairs[0]
    assert first.kind == "swuggy" and first.voice == "Alex"
    assert first.positive_text == "market" and first.negative_text == "marnet"
    assert Path(first.positive_audio).name == "aAAfmkmQpVz.wav" and Path(first.negative_audio).name == "bBKqzTnRwXa.wav"
    assert pairs[2].negative_text == "k ae n t ah l"  # empty word → phones
    assert first.meta["frequency"] == "120"
    assert load_swuggy(zr2021 / "lexical" / "dev")[0].positive_audio == first.positive_audio  # the folder itself


def test_load_sblimp(zr2021):
    pairs = load_sblimp(zr2021)
    assert len(pairs) == 2 and all(p.kind == "sblimp" for p in pairs)
    assert pairs[0].group == "anaphor_agreement/anaphor_gender_agreement"
    assert pairs[0].positive_text == "the girl saw herself" and pairs[0].negative_text == "the girl saw himself"
    assert pairs[0].id == "anaphor_agreement/anaphor_gender_agreement/1/Alex"


def test_zerospeech_pairs_encode_and_cache(zr2021, tmp_path, monkeypatch):
    pairs = encode_pairs(load_swuggy(zr2021), tmp_path / "cache", workers=1)
    assert len(pairs) == 3
    assert all(p.positive_units and p.negative_units for p in pairs)
    assert pairs[0].positive_units != pairs[0].negative_units  # "market" vs "marnet"
    monkeypatch.setattr(mp, "_unit_job", lambda job: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = encode_pairs(load_swuggy(zr2021), tmp_path / "cache", workers=1)
    assert [p.positive_units for p in again] == [p.positive_units for p in pairs]


def test_encode_pairs_records_unusable_audio(tmp_path):
    good = tmp_path / "0_correct.wav"
    sf.write(good, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    bad = tmp_path / "0_incorrect.wav"
    bad.write_bytes(b"not audio at all")
    out = encode_pairs(load_spoken_storycloze(tmp_path), tmp_path / "cache", workers=1)
    assert out == []
    rejected = [json.loads(line) for line in (tmp_path / "cache" / "rejected.jsonl").read_text().splitlines()]
    assert rejected[0]["path"] == str(bad) and "not a readable audio file" in rejected[0]["reason"]


def test_zerospeech_errors(zr2021, tmp_path):
    with pytest.raises(FileNotFoundError, match="no gold.csv"):
        load_swuggy(tmp_path)
    folder = tmp_path / "lexical" / "dev"
    folder.mkdir(parents=True)
    (folder / "gold.csv").write_text("filename,id,voice,correct\na,1,Alex,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['word'\]"):
        load_swuggy(tmp_path)
    (folder / "gold.csv").write_text("filename,id,voice,word,correct\na,1,Alex,cat,1\n")
    with pytest.raises(ValueError, match="no incorrect partner"):
        load_swuggy(tmp_path)
    (folder / "gold.csv").write_text("filename,id,voice,word,correct\na,1,Alex,cat,1\nb,1,Alex,cag,0\n")
    with pytest.raises(FileNotFoundError, match="lists a but"):
        load_swuggy(tmp_path)
    (folder / "gold.csv").write_text("filename,id,voice,word,correct\na,1,Alex,cat,yes\n")
    with pytest.raises(ValueError, match="'correct' must be 0 or 1"):
        load_swuggy(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_sblimp(zr2021, "train")


def _touch_wavs(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sf.write(folder / name, np.zeros(1600, np.float32), 16000)


def test_load_spoken_storycloze_layouts(tmp_path):
    _touch_wavs(tmp_path / "sSC", ["1_incorrect.wav", "1_correct.wav", "0_correct.wav", "0_incorrect.wav",
                                   "10_incorrect.wav", "10_correct.wav"])
    pairs = load_spoken_storycloze(tmp_path / "sSC", "ssc")
    assert [p.id for p in pairs] == ["ssc-0", "ssc-1", "ssc-10"]  # integer order
    assert all(Path(p.positive_audio).stem.endswith("_correct") for p in pairs)
    assert all(Path(p.negative_audio).stem.endswith("_incorrect") for p in pairs)
    # unlabelled members: name order, first = positive (SlamKit's convention)
    _touch_wavs(tmp_path / "tSC", ["3_b.wav", "3_a.wav"])
    (pair,) = load_spoken_storycloze(tmp_path / "tSC", "tsc")
    assert Path(pair.positive_audio).name == "3_a.wav" and pair.kind == "tsc"


@pytest.mark.parametrize("names, message", [
    (["x_correct.wav", "x_incorrect.wav"], "integer index"),
    (["0_correct.wav", "0_incorrect.wav", "0_other.wav"], "has 3 files"),
    (["0_correct.wav"], "has 1 files"),
    (["0_a_correct.wav", "0_b_correct.wav"], "do not form one correct and one incorrect"),
])
def test_load_spoken_storycloze_errors(tmp_path, names, message):
    _touch_wavs(tmp_path / "sc", names)
    with pytest.raises(ValueError, match=message):
        load_spoken_storycloze(tmp_path / "sc")


def test_long_form_stories_are_joined_like_story_cloze_members(built, monkeypatch):
    """A story told by one voice has the units of the story-cloze member with the same sentences (the
    cached sentences are reused: nothing is synthesized again)."""
    from speechrl.align.long_form import story_units
    from speechrl.corpus import grammar

    out, sets = built
    pair = sets["tsc"][0]
    story = grammar.generate_stories(1, 0)[0]  # the tsc pair's story (benchmark seed 0)
    assert " ".join(s.text for s in story.sentences) == pair.positive_text
    monkeypatch.setattr(mp, "_unit_job", lambda job: (_ for _ in ()).throw(AssertionError(f"recomputed {job}")))
    assert story_units([story], [VOICE], [1.0], seed=0, folder=out) == {story.id: pair.positive_units}
    with pytest.raises(ValueError, match="voice"):
        story_units([story], [], [1.0], seed=0, folder=out)
