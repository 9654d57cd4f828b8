"""`data:` sources in their real on-disk layouts, and bad rows: each one skipped with its reason."""

import json

import numpy as np
import pytest
import soundfile as sf

from speechrl.data.sources import DataConfig, load_rows

SR = 16000


def tone(path, seconds=0.5, channels=1, fmt=None, value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = 0.1 * np.sin(np.linspace(0, 300 * seconds, int(SR * seconds), dtype=np.float32))
    if value is not None:
        wav[10] = value
    sf.write(path, np.stack([wav] * channels, 1) if channels > 1 else wav, SR, format=fmt,
             subtype="FLOAT" if value is not None else None)
    return path


def rejected(folder):
    return [json.loads(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]


def test_a_manifest_with_twenty_kinds_of_bad_rows_loses_none_silently(tmp_path):
    d = tmp_path / "data"
    good = [tone(d / f"good{i}.wav") for i in range(4)]
    tone(d / "stereo.wav", channels=2)
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio at all")
    trunc = tone(d / "trunc.wav", 1.0).read_bytes()
    (d / "trunc.wav").write_bytes(trunc[:44])
    tone(d / "short.wav", 0.01)
    (d / "folder.wav").mkdir()
    ok = lambda i, **kw: json.dumps({"id": f"g{i}", "audio": f"good{i}.wav", "text": "hello world", **kw})
    lines = [ok(0, speaker="a"), ok(1, speaker="b"), ok(2, speaker="c", split="train"), ok(3, speaker="d"),
             json.dumps({"id": "st", "audio": "stereo.wav", "text": "two channels are fine"}),
             json.dumps({"id": "b1", "audio": "missing.wav", "text": "x"}),
             json.dumps({"id": "b2", "audio": "empty.wav", "text": "x"}),
             json.dumps({"id": "b3", "audio": "text.wav", "text": "x"}),
             json.dumps({"id": "b4", "audio": "trunc.wav", "text": "x"}),
             json.dumps({"id": "b5", "audio": "short.wav", "text": "x"}),
             json.dumps({"id": "b6", "audio": "folder.wav", "text": "x"}),
             json.dumps({"id": "b7", "audio": "good0.wav", "text": ""}),
             json.dumps({"id": "b8", "audio": "good0.wav", "text": "   "}),
             json.dumps({"id": "b9", "audio": "good0.wav"}),
             json.dumps({"id": "b10", "text": "no audio"}),
             json.dumps({"id": "b11", "audio": "good0.wav", "text": "x", "split": "validation"}),
             json.dumps({"id": "g0", "audio": "good1.wav", "text": "duplicate id"}),
             json.dumps({"id": "b13", "audio": "good0.wav", "text": "x", "keywords": "not a list"}),
             json.dumps({"id": "b14", "audio": "good0.wav", "text": 7}),
             '{"id": "b15", "audio": "good0.wav", "text": ',
             "[1, 2, 3]",
             json.dumps({"id": "b17", "audio": "good0.wav", "text": None}),
             json.dumps({"id": "b18", "audio": "good0.wav", "text": "x", "keywords": [1, 2]}),
             json.dumps({"id": "b19", "audio": str(tmp_path / "elsewhere" / "nope.flac"), "text": "x"})]
    raw = "\n".join(lines).encode() + b'\n{"id": "b20", "audio": "good0.wav", "text": "caf\xe9"}\n'
    (d / "manifest.jsonl").write_bytes(raw)
    rows, report = load_rows(DataConfig(manifest=str(d / "manifest.jsonl")), "asr", tmp_path / "run")
    assert sorted(r["id"] for r in rows) == ["g0", "g1", "g2", "g3", "st"]
    bad = rejected(tmp_path / "run")
    assert len(bad) == 20 == report["rejected"] and sum(report["by_reason"].values()) == 20
    assert all(b["reason"] for b in bad) and all(b["stage"] == "data" for b in bad)
    reasons = " | ".join(b["reason"] for b in bad)
    for needle in ("missing audio", "unreadable audio", "audio length", "not a file", "empty or missing text",
                   "no audio column", "unknown split", "duplicate id", "keywords", "malformed line",
                   "not UTF-8"):
        assert needle in reasons, needle
    assert {r["split"] for r in rows} <= {"train", "dev", "test"} and rows[2]["split"] == "train"
    # the rows an SFT needs are what the synthetic corpus gives: absolute audio, text, a speaker
    assert all(r["audio"].startswith(str(d)) for r in rows) and rows[0]["voice"] == "a"


def test_a_wholly_unusable_manifest_stops_with_the_file_and_its_first_bad_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio": "gone.wav", "text": "x"}) + "\n" + "{broken\n")
    with pytest.raises(ValueError, match=r"m\.jsonl.*missing audio.*malformed line"):
        load_rows(DataConfig(manifest=str(path)), "asr", tmp_path)
    with pytest.raises(ValueError, match="one source"):
        DataConfig(manifest="a", librispeech="b").source


def test_csv_manifest_with_task_columns(tmp_path):
    for i in range(3):
        tone(tmp_path / "clips" / f"c{i}.wav")
    (tmp_path / "m.csv").write_text("audio,text,translation,question,answer,keywords,speaker\n"
                                    + "".join(f"clips/c{i}.wav,hi {i},hola {i},who?,a person,hi;there,s{i}\n"
                                              for i in range(3)) + "clips/c0.wav,too,few\n")
    rows, report = load_rows(DataConfig(manifest=str(tmp_path / "m.csv")), "sqa", tmp_path / "r")
    assert len(rows) == 3 and report["rejected"] == 1
    assert rows[0]["questions"] == [{"question": "who?", "answer": "a person"}] and rows[0]["keywords"] == ["hi", "there"]
    rows, _ = load_rows(DataConfig(manifest=str(tmp_path / "m.csv")), "ast", tmp_path / "r2")
    assert [r["translation"] for r in rows] == ["hola 0", "hola 1", "hola 2"]


def test_librispeech_layout_and_its_subsets_as_splits(tmp_path):
    for subset, spk in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        chapter = tmp_path / subset / spk / "198"
        for u in range(2):
            tone(chapter / f"{spk}-198-{u:04d}.flac", fmt="FLAC")
        (chapter / f"{spk}-198.trans.txt").write_text(f"{spk}-198-0000 HELLO THERE\n{spk}-198-0001 GOOD MORNING\n"
                                                      f"{spk}-198-0002 FILE IS MISSING\n")
    rows, report = load_rows(DataConfig(librispeech=str(tmp_path)), "asr", tmp_path / "r")
    assert report["splits"] == {"dev": 2, "test": 2, "train": 2} and report["rejected"] == 3
    assert {r["text"] for r in rows} == {"hello there", "good morning"} and rows[0]["voice"] == "84"


def test_covost2_layout(tmp_path):
    for i in range(2):
        tone(tmp_path / "clips" / f"common_voice_en_{i}.wav")
    for split in ("train", "dev", "test"):
        (tmp_path / f"covost_v2.en_de.{split}.tsv").write_text(
            "path\tsentence\ttranslation\tclient_id\n"
            + "".join(f"common_voice_en_{i}.wav\tHello {i}.\tHallo {i}.\tspk{i}\n" for i in range(2)))
    rows, report = load_rows(DataConfig(covost2=str(tmp_path)), "ast", tmp_path / "r")
    assert report["rejected"] == 4  # the same clip ids again in dev and test: duplicates, each recorded
    assert [r["translation"] for r in rows] == ["Hallo 0.", "Hallo 1."]


def test_rows_without_splits_are_split_by_speaker_deterministically(tmp_path):
    tone(tmp_path / "a.wav")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "audio": "a.wav", "text": "x",
                                                          "speaker": f"s{i % 10}"}) + "\n" for i in range(60)))
    cfg = DataConfig(manifest=str(tmp_path / "m.jsonl"), dev_fraction=0.2, test_fraction=0.2, seed=3)
    rows, report = load_rows(cfg, "asr", tmp_path / "r")
    by_speaker = {}
    for r in rows:
        by_speaker.setdefault(r["voice"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_speaker.values())
    assert report["splits"] == {"train": 36, "dev": 12, "test": 12}
    assert [r["split"] for r in load_rows(cfg, "asr", tmp_path / "r2")[0]] == [r["split"] for r in rows]
