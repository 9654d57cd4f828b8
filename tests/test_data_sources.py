"""`data:` sources in their real on-disk layouts, and bad rows: each one skipped with its reason."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from speechrl.data.sources import DataConfig, data_key, load_rows
from speechrl.data.tasks import task_examples

SR = 16000


def tone(path, seconds=0.5, channels=1, fmt=None, value=None, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = 0.1 * np.sin(np.linspace(0, 300 * seconds, max(1, int(SR * seconds)), dtype=np.float32))
    if value is not None:
        wav[min(10, wav.size - 1)] = value
    sf.write(path, np.stack([wav] * channels, 1) if channels > 1 else wav, SR, format=fmt,
             subtype="FLOAT" if value is not None else subtype)
    return path


def rejected(folder):
    return [json.loads(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]


def kind_of(entry):
    return entry["reason"].split(":")[0]


def _bad_manifest(d, tmp_path):
    """A JSONL manifest mixing good rows with every kind of bad one: (lines, {line number: (kind under
    ast, kind under sqa)}); None = the row is kept."""
    for i in range(4):
        tone(d / f"good{i}.wav")
    tone(d / "stereo.wav", channels=2)
    tone(d / "clip.flac", fmt="FLAC")
    tone(tmp_path / "elsewhere" / "abs.wav")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio at all")
    full = tone(d / "trunc.wav", 1.0).read_bytes()
    (d / "trunc.wav").write_bytes(full[: len(full) // 2])
    tone(d / "nan.wav", value=float("nan"))
    tone(d / "short.wav", 0.01)
    tone(d / "long.wav", 3.0)
    (d / "folder.wav").mkdir()
    qa = {"translation": "hola", "question": "what?", "answer": "a tone"}
    good = lambda i, **kw: {"id": f"g{i}", "audio": f"good{i}.wav", "text": "hello world", **qa, **kw}
    bad = lambda uid, **kw: {"id": uid, "audio": "good0.wav", "text": "x", **qa, **kw}
    table = [  # (row, kind under ast, kind under sqa)
        (good(0, speaker="a"), None, None),
        (good(1, speaker="b", keywords=["hello"]), None, None),
        (good(2, speaker="c", split="train"), None, None),
        (good(3, speaker="d"), None, None),
        ({"id": "st", "audio": "stereo.wav", "text": "two channels are fine", **qa}, None, None),
        ({"id": "fl", "audio": "clip.flac", "text": "flac", **qa}, None, None),
        ({"id": "abs", "audio": str(tmp_path / "elsewhere" / "abs.wav"), "text": "absolute", **qa}, None, None),
        ({"id": "m", "audio": "good1.wav", "text": "merged", **qa}, None, None),
        ({"id": "m", "audio": "good1.wav", "text": "merged", **qa, "question": "and then?"}, None, None),
        (bad("b1", audio="missing.wav"), "missing audio", "missing audio"),
        (bad("b2", audio="empty.wav"), "empty audio", "empty audio"),
        (bad("b3", audio="text.wav"), "unreadable audio", "unreadable audio"),
        (bad("b4", audio="trunc.wav"), "truncated audio", "truncated audio"),
        (bad("b5", audio="nan.wav"), "bad samples", "bad samples"),
        (bad("b6", audio="short.wav"), "audio too short", "audio too short"),
        (bad("b7", audio="long.wav"), "audio too long", "audio too long"),
        (bad("b8", audio="folder.wav"), "not a file", "not a file"),
        (bad("b9", text=""), "empty text", "empty text"),
        (bad("b10", text="  \t "), "empty text", "empty text"),
        ({"id": "b11", "text": "no audio", **qa}, "no audio column", "no audio column"),
        ({"id": "b12", "audio": "good0.wav", **qa}, "missing column", "missing column"),
        (bad("b13", text=7), "bad value", "bad value"),
        (bad("b14", text=None), "missing column", "missing column"),
        (bad("g0", audio="good2.wav"), "duplicate id", "duplicate id"),
        (bad("b16", split="holdout"), "unknown split", "unknown split"),
        (bad("b17", keywords="not a list"), "bad value", "bad value"),
        (bad("b18", keywords=[1, 2]), "bad value", "bad value"),
        ({"id": "b19", "audio": "good0.wav", "text": "x", "question": "q?", "answer": "a"}, "missing column", None),
        ({"id": "b20", "audio": "good0.wav", "text": "x", "translation": "t", "question": "q?"}, None,
         "missing column"),
        (bad("b21", audio=str(tmp_path / "elsewhere" / "nope.flac")), "missing audio", "missing audio"),
    ]
    lines = [json.dumps(row).encode() for row, _, _ in table]
    kinds = {n: (a, s) for n, (_, a, s) in enumerate(table, 1)}
    for raw, kind in ((b'{"id": "b22", "audio": "good0.wav", "text": "caf\xe9"}', "not UTF-8"),
                      (b'{"id": "b23", "audio": "good0.wav", "text": ', "malformed line"),
                      (b"[1, 2, 3]", "malformed line")):
        lines.append(raw)
        kinds[len(lines)] = (kind, kind)
    (d / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n\n")
    return kinds


@pytest.mark.parametrize("task", ["ast", "sqa"])
def test_a_manifest_with_every_kind_of_bad_row_loses_none_silently(tmp_path, task):
    d = tmp_path / "data"
    kinds = _bad_manifest(d, tmp_path)
    expect = {n: k[0 if task == "ast" else 1] for n, k in kinds.items()}
    cfg = DataConfig(manifest=str(d / "manifest.jsonl"), max_seconds=2.0)
    rows, report = load_rows(cfg, task, tmp_path / "run")
    bad = rejected(tmp_path / "run")
    got = {int(b["path"].rsplit(":", 1)[1]): kind_of(b) for b in bad}
    assert got == {n: k for n, k in expect.items() if k}
    assert len(bad) == len(got) >= 20 and len(set(got.values())) == 16  # one entry a bad row, 16 kinds
    assert all(b["stage"] == "data" and b["path"].startswith(str(d / "manifest.jsonl")) for b in bad)
    assert report["rejected"] == len(bad) and sum(report["by_reason"].values()) == len(bad)
    assert report["by_reason"] == dict(sorted(__import__("collections").Counter(got.values()).items()))
    kept = {"g0", "g1", "g2", "g3", "st", "fl", "abs", "m"} | ({"b20"} if task == "ast" else {"b19"})
    assert [r["id"] for r in rows] == [i for i in ["g0", "g1", "g2", "g3", "st", "fl", "abs", "m", "b19", "b20"]
                                       if i in kept]
    assert report["rows"] == len(rows) and sum(report["splits"].values()) == len(rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["m"]["questions"] == [{"question": "what?", "answer": "a tone"},
                                       {"question": "and then?", "answer": "a tone"}]
    assert by_id["g2"]["split"] == "train" and {r["split"] for r in rows} <= {"train", "dev", "test"}
    assert by_id["g0"]["voice"] == "a" and by_id["st"]["voice"] == "" and by_id["g1"]["keywords"] == ["hello"]
    assert all(os.path.isabs(r["audio"]) and os.path.isfile(r["audio"]) for r in rows)
    assert by_id["g0"]["duration"] == 0.5
    reasons = {b["reason"] for b in bad}
    assert any("(id b1)" in r for r in reasons)  # the entry names the row
    examples = task_examples(rows, task)  # the rows are what the task examples need
    assert len(examples) == (len(rows) if task == "ast" else len(rows) + 1)
    cfg.check_audio = False  # only existence is checked then; the header problems reach feature extraction
    rows, report = load_rows(cfg, task, None)
    assert {"b2", "b3", "b4", "b5", "b6", "b7"} <= {r["id"] for r in rows}
    assert report["by_reason"]["missing audio"] == 2 and report["by_reason"]["not a file"] == 1
    assert not (tmp_path / "run2").exists()


def test_a_wholly_unusable_manifest_stops_with_the_file_and_its_first_bad_rows(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"audio": "gone.wav", "text": "x"}) + "\n{broken\n"
                    + json.dumps({"audio": "gone2.wav", "text": ""}) + "\n" + json.dumps({"text": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl.*4 bad rows.*missing audio.*malformed line.*empty text") as err:
        load_rows(DataConfig(manifest=str(path)), "asr", tmp_path)
    assert "no audio column" not in str(err.value)  # the first three only
    with pytest.raises(ValueError, match="does not exist"):
        load_rows(DataConfig(manifest=str(tmp_path / "nope.jsonl")), "asr", tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv.*no rows found"):
        load_rows(DataConfig(manifest=str(tmp_path / "empty.csv")), "asr", tmp_path)
    with pytest.raises(ValueError, match=r"one source.*data\.manifest and data\.hf"):
        DataConfig(manifest="a", hf="b").source
    assert DataConfig().source == "corpus"


def test_audio_only_rows_for_the_audio_task_and_transcripts_for_tts(tmp_path):
    """Task ``audio`` (Align-SLM) needs no transcript: a missing or blank one is "", a non-string one is
    still a bad value; task ``tts`` rejects them as ``asr`` does."""
    for i in range(3):
        tone(tmp_path / f"a{i}.wav")
    lines = [{"id": "none", "audio": "a0.wav"}, {"id": "blank", "audio": "a1.wav", "text": " "},
             {"id": "said", "audio": "a2.wav", "text": "hello"}, {"id": "typed", "audio": "a2.wav", "text": "x", "text": 3},
             {"id": "gone", "audio": "gone.wav"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = DataConfig(manifest=str(tmp_path / "m.jsonl"), split_by="row", dev_fraction=0, test_fraction=0)
    rows, report = load_rows(cfg, "audio", tmp_path / "audio")
    assert [(r["id"], r["text"]) for r in rows] == [("none", ""), ("blank", ""), ("said", "hello")]
    assert report["task"] == "audio" and report["by_reason"] == {"bad value": 1, "missing audio": 1}
    rows, report = load_rows(cfg, "tts", tmp_path / "tts")
    assert [r["id"] for r in rows] == ["said"]
    assert report["by_reason"] == {"bad value": 1, "empty text": 1, "missing column": 2}  # text before audio
    assert len(rejected(tmp_path / "tts")) == 4


def test_a_manifests_accepted_answer_wordings_reach_spoken_qa(tmp_path):
    """A ``questions`` item may list ``answers`` (as the corpus's own manifest does with
    ``qa_answers: sentence``): the example trains on one of them and is scored against all; a list that
    is not of texts is a bad value."""
    for i in range(3):
        tone(tmp_path / f"a{i}.wav")
    wordings = ["Anna walked to the market.", "She walked to the market."]
    qa = {"question": "Where did Anna walk?", "answer": "to the market"}
    lines = [{"id": "many", "audio": "a0.wav", "text": "x", "questions": [{**qa, "answers": wordings}]},
             {"id": "one", "audio": "a1.wav", "text": "x", "questions": [{**qa, "answers": None}]},
             {"id": "typed", "audio": "a2.wav", "text": "x", "questions": [{**qa, "answers": "x"}]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = DataConfig(manifest=str(tmp_path / "m.jsonl"), split_by="row", dev_fraction=0, test_fraction=0)
    rows, report = load_rows(cfg, "sqa", tmp_path / "r")
    assert [r["id"] for r in rows] == ["many", "one"] and report["by_reason"] == {"bad value": 1}
    many, one = task_examples(rows, "sqa")
    assert many.references == wordings and many.reference in wordings
    assert (one.reference, one.all_references) == ("to the market", ["to the market"])


def test_csv_manifest_with_task_columns(tmp_path):
    for i in range(3):
        tone(tmp_path / "clips" / f"c{i}.wav")
    body = ("audio,text,translation,question,answer,keywords,speaker\n"
            + "".join(f"clips/c{i}.wav,\"hi, {i}\",hola {i},who?,a person,hi;there,s{i}\n" for i in range(3))
            + "clips/c0.wav,hi 0,hola 0,where?,here,,s0\n"  # a second question about c0
            + "clips/c0.wav,too,few\n")
    (tmp_path / "m.csv").write_bytes(body.encode() + b"clips/c1.wav,caf\xe9,x,q,a,,s1\n")
    rows, report = load_rows(DataConfig(manifest=str(tmp_path / "m.csv")), "sqa", tmp_path / "r")
    assert len(rows) == 3 and report["rejected"] == 2 and report["questions"] == 4
    assert report["by_reason"] == {"not UTF-8": 1, "wrong column count": 1}
    assert rows[0]["id"] == "clips/c0" and rows[0]["text"] == "hi, 0"
    assert rows[0]["questions"] == [{"question": "who?", "answer": "a person"}, {"question": "where?", "answer": "here"}]
    assert rows[0]["keywords"] == ["hi", "there"] and rows[0]["voice"] == "s0"
    rows, _ = load_rows(DataConfig(manifest=str(tmp_path / "m.csv")), "ast", tmp_path / "r2")
    assert [r["translation"] for r in rows] == ["hola 0", "hola 1", "hola 2"]
    lines = [e["path"].rsplit(":", 1)[1] for e in rejected(tmp_path / "r2")]
    assert lines == ["6", "7"]


def test_headerless_raw_audio_needs_its_sample_rate(tmp_path):
    from speechrl.data.features import features

    for i in range(3):  # 0.5 s of 16-bit mono PCM at 8 kHz, no header
        (0.1 * 32767 * np.sin(np.arange(4000) / 5)).astype("<i2").tofile(tmp_path / f"c{i}.raw")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"audio": f"c{i}.raw", "text": f"clip {i}"}) + "\n"
                                              for i in range(3)))
    with pytest.raises(ValueError, match="headerless raw audio: its sample rate is unknown"):
        load_rows(DataConfig(manifest=str(tmp_path / "m.jsonl")), "asr", tmp_path / "r")
    cfg = DataConfig(manifest=str(tmp_path / "m.jsonl"), raw_sample_rate=8000, split_by="row")
    rows, report = load_rows(cfg, "asr", tmp_path / "r2")
    assert report["rejected"] == 0 and [r["duration"] for r in rows] == [0.5] * 3
    feats = features(tmp_path / "cache", rows, "length", workers=1, featurize=lambda wav: {"n": np.array([wav.size])})
    assert {uid: int(f["n"][0]) for uid, f in feats.items()} == {r["id"]: 8000 for r in rows}  # loaded at 8 kHz → 16 kHz


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
    cfg.seed = 4
    assert [r["split"] for r in load_rows(cfg, "asr", tmp_path / "r3")[0]] != [r["split"] for r in rows]
    cfg.split_by = "row"
    rows, report = load_rows(cfg, "asr", tmp_path / "r4")
    assert report["splits"] == {"train": 36, "dev": 12, "test": 12}
    assert any(len({r["split"] for r in rows if r["voice"] == s}) > 1 for s in by_speaker)
    (tmp_path / "two.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "audio": "a.wav", "text": "x",
                                                            "speaker": f"s{i % 2}"}) + "\n" for i in range(6)))
    with pytest.raises(ValueError, match="cannot hold out test and dev from 2 speakers.*split_by=row"):
        load_rows(DataConfig(manifest=str(tmp_path / "two.jsonl")), "asr", tmp_path / "r5")
    mixed = [{"id": f"l{i}", "audio": "a.wav", "text": "x", "speaker": f"s{i}", "split": s}
             for i, s in enumerate(["train", "train", "dev", "test"])]
    mixed += [{"id": "u0", "audio": "a.wav", "text": "x", "speaker": "s2"}, {"id": "u1", "audio": "a.wav", "text": "x"}]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    rows, report = load_rows(DataConfig(manifest=str(tmp_path / "mixed.jsonl")), "asr", tmp_path / "r6")
    # u0 follows its speaker's split; u1 alone cannot be split three ways: train, said so
    assert [r["split"] for r in rows] == ["train", "train", "dev", "test", "dev", "train"] and report["notes"]


def _librispeech(root, subsets=(("train-clean-100", ("19", "26", "27")), ("dev-clean", ("84",)),
                                ("test-clean", ("61",)))):
    for subset, speakers in subsets:
        for spk in speakers:
            chapter = root / subset / spk / "198"
            for u in range(2):
                tone(chapter / f"{spk}-198-{u:04d}.flac", fmt="FLAC")
            (chapter / f"{spk}-198.trans.txt").write_bytes(
                f"{spk}-198-0000 HELLO THERE\n{spk}-198-0001 GOOD MORNING\n{spk}-198-0002 FILE IS MISSING\n".encode()
                + f"{spk}-198-0001 BAD \xff BYTES\n".encode("latin-1"))


def test_librispeech_layout_and_its_subsets_as_splits(tmp_path):
    _librispeech(tmp_path / "LibriSpeech")
    for root in (tmp_path, tmp_path / "LibriSpeech"):  # the root, or the folder holding LibriSpeech/
        rows, report = load_rows(DataConfig(librispeech=str(root)), "asr", tmp_path / "r")
        assert report["splits"] == {"train": 6, "dev": 2, "test": 2}
        assert report["by_reason"] == {"missing audio": 5, "not UTF-8": 5}
    assert {r["text"] for r in rows} == {"hello there", "good morning"}
    assert rows[0]["id"] == "84-198-0000" and rows[0]["voice"] == "84" and rows[0]["split"] == "dev"
    assert rows[0]["audio"] == str(tmp_path / "LibriSpeech" / "dev-clean" / "84" / "198" / "84-198-0000.flac")
    assert any("train-clean-100/19/198/19-198.trans.txt:3" in e["path"] for e in rejected(tmp_path / "r"))
    cfg = DataConfig(librispeech=str(tmp_path), librispeech_subsets=["train-clean-100"], dev_fraction=0.2,
                     test_fraction=0.2)
    rows, report = load_rows(cfg, "asr", tmp_path / "r2")  # no dev/test subset: carved from train by speaker
    assert report["splits"] == {"train": 2, "dev": 2, "test": 2} and report["notes"]
    assert len({r["voice"] for r in rows if r["split"] == "dev"} & {r["voice"] for r in rows if r["split"] != "dev"}) == 0
    rows, report = load_rows(DataConfig(librispeech=str(tmp_path), max_rows=1), "asr", tmp_path / "r3")
    assert report["splits"] == {"train": 1, "dev": 1, "test": 1}
    with pytest.raises(ValueError, match="no LibriSpeech subset"):
        load_rows(DataConfig(librispeech=str(tmp_path), librispeech_subsets=["train-other-500"]), "asr", tmp_path)


def test_covost2_layout(tmp_path):
    for split, n in (("train", 3), ("dev", 1), ("test", 1)):
        rows = []
        for i in range(n):
            name = f"common_voice_en_{split}{i}.mp3"
            tone(tmp_path / "clips" / name, fmt="MP3")
            rows.append(f'{name}\tHe said "hi" {i}.\tEr sagte "hallo" {i}.\tclient{split}{i}\n')
        rows.append(f"common_voice_en_{split}_gone.mp3\tGone.\tWeg.\tclientx\n")
        (tmp_path / f"covost_v2.en_de.{split}.tsv").write_text("path\tsentence\ttranslation\tclient_id\n" + "".join(rows))
    with (tmp_path / "covost_v2.en_de.train.tsv").open("a") as f:
        f.write("common_voice_en_train0.mp3\tno translation\n")
    rows, report = load_rows(DataConfig(covost2=str(tmp_path)), "ast", tmp_path / "r")
    assert report["splits"] == {"train": 3, "dev": 1, "test": 1}
    assert report["by_reason"] == {"missing audio": 3, "wrong column count": 1}
    assert rows[0]["text"] == 'He said "hi" 0.' and rows[0]["translation"] == 'Er sagte "hallo" 0.'
    assert rows[0]["id"] == "common_voice_en_train0" and rows[0]["voice"] == "clienttrain0"
    assert report["languages"] == {"de": 5}  # the pair's target: prompted for and scored in German
    assert {(e.instruction, e.language) for e in task_examples(rows, "ast")} == {("Translate the audio into German.", "de")}
    with pytest.raises(ValueError, match="no covost_v2.en_fr"):
        load_rows(DataConfig(covost2=str(tmp_path), covost2_pair="en_fr"), "ast", tmp_path)


def test_translation_targets_come_from_the_rows_else_data_target_language(tmp_path):
    """A manifest's language column (any name), several targets in one source, each example prompted for
    and scored in its own; rows naming none take data.target_language."""
    tone(tmp_path / "a.wav")
    row = lambda uid, translation, **kw: {"id": uid, "audio": "a.wav", "text": "good morning",
                                          "translation": translation, **kw}
    lines = [row("d", "Guten Morgen", lang="de"), row("f", "Bonjour", lang="fr-FR"), row("x", "?", lang="xx"),
             row("n", "Buenos días"), row("blank", "Bom dia", lang=" "), row("bad", "3", lang=3)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = DataConfig(manifest=str(tmp_path / "m.jsonl"), language_column="lang", split_by="row", dev_fraction=0,
                     test_fraction=0)
    rows, report = load_rows(cfg, "ast", tmp_path / "r")
    assert report["by_reason"] == {"bad value": 1} and "language is int" in rejected(tmp_path / "r")[0]["reason"]
    assert report["languages"] == {"de": 1, "es": 2, "fr-FR": 1, "xx": 1}
    examples = task_examples(rows, "ast")
    assert [(e.language, e.instruction) for e in examples] == [
        ("de", "Translate the audio into German."), ("fr-FR", "Translate the audio into French."),
        ("xx", "Translate the audio into xx."), ("es", "Translate the audio into Spanish."),
        ("es", "Translate the audio into Spanish.")]
    assert [e.columns()["language"] for e in examples] == ["de", "fr-FR", "xx", "es", "es"]  # what rewards read
    cfg.target_language = "pt"
    rows, _ = load_rows(cfg, "ast", None)
    assert [e.instruction for e in task_examples(rows, "ast")][3:] == ["Translate the audio into Portuguese."] * 2
    rows, report = load_rows(cfg, "asr", None)  # ASR is English; its rows keep a language they name
    assert report["rejected"] == 0 and "languages" not in report and rows[0]["language"] == "de"
    assert {e.language for e in task_examples(rows, "asr")} == {"en"}


def test_the_corpus_stays_spanish_and_reads_the_same_as_a_manifest(tiny_corpus, tmp_path):
    """The synthetic corpus's translation prompt is the one it always had (so its cached SFT stages keep
    their fingerprints), and its manifest read as a user's source gives the same examples."""
    from speechrl.corpus.build import load_manifest

    corpus = task_examples(load_manifest(tiny_corpus), "ast")
    assert {(e.instruction, e.language) for e in corpus} == {("Translate the audio into Spanish.", "es")}
    rows, report = load_rows(DataConfig(manifest=str(tiny_corpus / "manifest.jsonl")), "ast", tmp_path / "r")
    as_data = task_examples(rows, "ast")
    assert report["languages"] == {"es": len(rows)} and len(as_data) == len(corpus)
    assert sorted((e.id, e.instruction, e.reference, e.language) for e in as_data) == \
        sorted((e.id, e.instruction, e.reference, e.language) for e in corpus)


def test_librisqa_part_one_over_librispeech(tmp_path):
    ls = tmp_path / "LibriSpeech"
    _librispeech(ls, (("train-clean-360", ("19", "26", "27")), ("test-clean", ("61",))))
    qa = lambda sub, spk, u, **kw: {"speech_path": f"LibriSpeech/{sub}/{spk}/198/{spk}-198-{u:04d}.wav",
                                    "text": "hello there", "question": f"what about {spk}?", "answer": "a greeting", **kw}
    train = [qa("train-clean-360", s, u) for s in ("19", "26", "27") for u in range(2)]
    train += [qa("train-clean-360", "19", 0, question="and who?"), qa("train-clean-360", "19", 1, answer=""),
              qa("train-clean-360", "19", 9)]
    (tmp_path / "sqa").mkdir()
    (tmp_path / "sqa" / "LibriSQA-PartI-train.json").write_text(json.dumps(train))
    (tmp_path / "sqa" / "LibriSQA-PartI-test.json").write_text(json.dumps([qa("test-clean", "61", 0)]))
    cfg = DataConfig(librisqa=str(tmp_path / "sqa"), librisqa_audio_root=str(tmp_path), dev_fraction=0.2)
    rows, report = load_rows(cfg, "sqa", tmp_path / "r")
    assert report["splits"] == {"train": 4, "dev": 2, "test": 1} and report["questions"] == 8
    assert report["by_reason"] == {"missing audio": 1, "missing column": 1}
    first = next(r for r in rows if r["id"] == "19-198-0000")
    assert first["audio"].endswith("19-198-0000.flac") and first["voice"] == "19"
    assert [q["question"] for q in first["questions"]] == ["what about 19?", "and who?"]
    assert len(task_examples(rows, "sqa")) == 8


def test_hf_save_to_disk_with_audio_bytes_and_dataset_dict(tmp_path):
    from datasets import Audio, Dataset, DatasetDict

    files = [str(tone(tmp_path / "src" / f"a{i}.wav", 0.3 + 0.1 * i)) for i in range(4)]
    ds = Dataset.from_dict({"audio": files, "text": ["one", "two", "", "four"], "speaker": ["x", "y", "z", "x"],
                            "split": ["train", "train", "train", "test"]}).cast_column("audio", Audio())
    ds.save_to_disk(str(tmp_path / "disk"))
    for f in files:  # only the bytes saved in the dataset remain
        os.remove(f)
    cache = tmp_path / "cache"
    cfg = DataConfig(hf=str(tmp_path / "disk"), test_fraction=0)
    rows, report = load_rows(cfg, "asr", tmp_path / "r", cache=cache)
    assert [r["text"] for r in rows] == ["one", "two", "four"] and report["by_reason"] == {"empty text": 1}
    assert all(r["audio"].startswith(str(cache / "audio")) for r in rows) and [r["id"] for r in rows] == ["a0", "a1", "a3"]
    assert [round(sf.info(r["audio"]).duration, 2) for r in rows] == [0.3, 0.4, 0.6]
    assert report["splits"] == {"train": 1, "dev": 1, "test": 1}  # dev carved from train (2 speakers there)
    again, _ = load_rows(cfg, "asr", tmp_path / "r", cache=cache)
    assert again == rows and len(list((cache / "audio").iterdir())) == 3  # written once
    dd = DatasetDict({name: Dataset.from_dict({"path": [str(tone(tmp_path / name / f"{name}{i}.wav")) for i in range(2)],
                                               "sentence": [f"{name} {i}" for i in range(2)]})
                      for name in ("train", "validation", "test")})
    dd.save_to_disk(str(tmp_path / "dd"))
    rows, report = load_rows(DataConfig(hf=str(tmp_path / "dd"), audio_column="path", text_column="sentence"),
                             "asr", tmp_path / "r2")
    assert report["splits"] == {"train": 2, "dev": 2, "test": 2} and rows[0]["text"] == "train 0"
    rows, report = load_rows(DataConfig(hf=str(tmp_path / "dd"), hf_split="validation", audio_column="path",
                                        text_column="sentence", split_by="row", dev_fraction=0, test_fraction=0.5),
                             "asr", tmp_path / "r3")
    assert report["splits"] == {"train": 1, "dev": 0, "test": 1}
    with pytest.raises(ValueError, match="no audio column 'audio'"):
        load_rows(DataConfig(hf=str(tmp_path / "dd")), "asr", tmp_path / "r4")
    one = Dataset.from_dict({"audio": [str(tone(tmp_path / "one" / f"o{i}.wav")) for i in range(3)],
                             "text": ["a", "b", "c"], "speaker_id": ["s", "s", "t"]}).cast_column("audio", Audio())
    DatasetDict({"train": one.select([0, 1]), "test": one.select([2])}).save_to_disk(str(tmp_path / "one_spk"))
    rows, report = load_rows(DataConfig(hf=str(tmp_path / "one_spk")), "asr", tmp_path / "r5", tmp_path / "c5")
    assert [r["split"] for r in rows] == ["train", "train", "test"] and rows[0]["voice"] == "s"
    assert "none carved from train" in report["notes"][0]  # one speaker in train: dev left empty, said so


def test_hf_audiofolder_parquet_folder_and_unknown_hub_id(tmp_path):
    from datasets import Audio, Dataset

    af = tmp_path / "af"
    for split in ("train", "test"):
        for i in range(3):
            tone(af / split / f"{split}{i}.wav")
        (af / split / "metadata.csv").write_text("file_name,text,speaker\n" + "".join(
            f"{split}{i}.wav,{split} words {i},{split}{i % 2}\n" for i in range(3)) + "gone.wav,missing,q\n")
    rows, report = load_rows(DataConfig(hf=str(af)), "asr", tmp_path / "r")
    assert report["splits"]["test"] == 3 and report["by_reason"] == {"missing audio": 2}
    assert report["splits"]["train"] + report["splits"]["dev"] == 3 and report["splits"]["dev"] >= 1  # carved
    assert rows[0]["audio"] == str(af / "train" / "train0.wav") and rows[0]["voice"] == "train0"
    assert rows[0]["split"] == rows[2]["split"] != rows[1]["split"]  # whole speakers
    flat = tmp_path / "flat"
    tone(flat / "x.wav"), tone(flat / "y.wav")
    (flat / "metadata.jsonl").write_text(json.dumps({"file_name": "x.wav", "text": "ex", "translation": "equis"})
                                         + "\n" + json.dumps({"file_name": "y.wav", "text": "why"}) + "\n")
    rows, report = load_rows(DataConfig(hf=str(flat), split_by="row", test_fraction=0, dev_fraction=0),
                             "ast", tmp_path / "r2")
    assert [r["translation"] for r in rows] == ["equis"] and report["by_reason"] == {"missing column": 1}
    pq = tmp_path / "pq"
    pq.mkdir()
    files = [str(tone(tmp_path / "pqsrc" / f"p{i}.wav")) for i in range(3)]
    Dataset.from_dict({"audio": files, "text": ["p0", "p1", "p2"]}).cast_column("audio", Audio()) \
        .to_parquet(str(pq / "train.parquet"))
    rows, report = load_rows(DataConfig(hf=str(pq), split_by="row", dev_fraction=0, test_fraction=0.3),
                             "asr", tmp_path / "r3", cache=tmp_path / "c3")
    assert report["rows"] == 3 and all(os.path.isfile(r["audio"]) for r in rows)
    with pytest.raises(ValueError, match="cannot load with datasets"):
        load_rows(DataConfig(hf="no-such-user/no-such-dataset-xyz"), "asr", tmp_path / "r4")


def test_data_key_follows_the_source_files_not_the_split_settings(tmp_path):
    tone(tmp_path / "a.wav")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": "a.wav", "text": "x"}) + "\n")
    cfg = DataConfig(manifest=str(m))
    key = data_key(cfg)
    assert key.startswith("manifest-") and len(key) == len("manifest-") + 12 and data_key(DataConfig(manifest=str(m))) == key
    assert data_key(DataConfig(manifest=str(m), seed=5, dev_fraction=0.3)) == key
    assert data_key(DataConfig(manifest=str(m), target_language="de", language_column="lang")) == key  # no audio
    m.write_text(json.dumps({"audio": "a.wav", "text": "changed"}) + "\n")
    assert data_key(cfg) != key
    _librispeech(tmp_path / "ls", (("train-clean-100", ("19",)),))
    ls = data_key(DataConfig(librispeech=str(tmp_path / "ls")))
    assert ls.startswith("librispeech-") and ls == data_key(DataConfig(librispeech=str(tmp_path / "ls")))

