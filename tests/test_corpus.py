"""The offline spoken corpus, built for real (synthesis, Whisper, hama, Piper) at a tiny size."""

import json

import datasets

from speechrl.audio import load_audio
from speechrl.corpus.build import CorpusConfig, build_corpus, load_manifest, plan
from speechrl.runlog import read_json


def test_command_writes_manifest_summary_config_metrics(tiny_corpus):
    for name in ("manifest.jsonl", "summary.json", "config.yaml", "metrics.jsonl", "stories.jsonl"):
        assert (tiny_corpus / name).is_file(), name
    summary = read_json(tiny_corpus / "summary.json")
    assert summary["num_utterances"] >= 40 and summary["rejected"] == 0
    assert len(summary["voices"]) >= 3
    assert 0 <= summary["asr_wer"] <= 0.5  # real Whisper tiny.en on real synthesized speech
    assert 0 <= summary["unit_roundtrip_wer"] <= 1.0 and summary["roundtrip_utterances"] == 4


def test_a_dev_voice_speaks_every_dev_sentence_and_nothing_else():
    import pytest

    from speechrl.config import ConfigError

    base = CorpusConfig(size=120, text="wordnet", voices=["espeak-us-m6", "espeak-us-m1", "piper-joe"],
                        test_voice="espeak-us-klatt4")
    _, before = plan(base)
    _, rows = plan(CorpusConfig(**{**base.__dict__, "dev_voice": "espeak-us-f2"}))
    dev = [r for r in rows if r["split"] == "dev"]
    assert {r["voice"] for r in rows if r["voice"] == "espeak-us-f2"} and all(
        r["split"] == "dev" for r in rows if r["voice"] == "espeak-us-f2")
    by_sentence = {}
    for r in dev:
        by_sentence.setdefault((r["story_id"], r["sentence_index"]), []).append(r["voice"])
    assert all(v.count("espeak-us-f2") == 1 for v in by_sentence.values())  # once per dev sentence
    same = [(r["text"], r["voice"], r["speed"]) for r in before if r["split"] != "dev"]
    assert same == [(r["text"], r["voice"], r["speed"]) for r in rows if r["split"] != "dev"]  # train, test as before
    with pytest.raises(ConfigError, match="dev_voice"):
        plan(CorpusConfig(**{**base.__dict__, "dev_voice": "espeak-us-klatt4"}))


def test_splits_hold_out_stories_and_one_voice(tiny_corpus):
    rows = load_manifest(tiny_corpus)
    stories = {s: {r["story_id"] for r in rows if r["split"] == s} for s in ("train", "dev", "test")}
    assert all(stories.values())
    assert not (stories["train"] & stories["test"]) and not (stories["train"] & stories["dev"])
    test_voice = read_json(tiny_corpus / "summary.json")["test_voice"]
    assert {r["split"] for r in rows if r["voice"] == test_voice} == {"test"}


def test_rows_carry_task_fields_and_real_audio(tiny_corpus):
    rows = load_manifest(tiny_corpus)
    for r in rows[:5]:
        wav = load_audio(r["audio"])
        assert abs(len(wav) / 16000 - r["duration"]) < 0.01
        assert r["text"] and r["translation"] and r["questions"] and isinstance(r["keywords"], list)
        assert r["questions"][0]["answer"].lower() in r["text"].lower()


def test_manifest_loads_with_datasets(tiny_corpus):
    ds = datasets.load_dataset("json", data_files=str(tiny_corpus / "manifest.jsonl"), split="train")
    assert len(ds) == read_json(tiny_corpus / "summary.json")["num_utterances"]
    assert {"id", "audio", "duration", "text", "voice", "split", "translation", "questions"} <= set(ds.column_names)


def test_same_seed_gives_byte_identical_manifest_and_audio(tiny_corpus, tmp_path):
    cfg = CorpusConfig(size=40, seed=3, evaluate=False)
    build_corpus(cfg, tmp_path)
    assert (tmp_path / "manifest.jsonl").read_bytes() == (tiny_corpus / "manifest.jsonl").read_bytes()
    first = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])["audio"]
    assert (tmp_path / first).read_bytes() == (tiny_corpus / first).read_bytes()


def test_other_seed_differs():
    assert plan(CorpusConfig(size=40, seed=3))[1] != plan(CorpusConfig(size=40, seed=4))[1]


def test_rerun_reuses_audio(tiny_corpus, tmp_path):
    cfg = CorpusConfig(size=40, seed=3, evaluate=False)
    build_corpus(cfg, tmp_path)
    wav = next((tmp_path / "audio").iterdir())
    mtime = wav.stat().st_mtime_ns
    build_corpus(cfg, tmp_path)
    assert wav.stat().st_mtime_ns == mtime


# sha-256 of plan(CorpusConfig(size=200, seed=s)) rows and the cache folder, computed at 3b72068 (before
# corpus.qa_answers): the default manifest and its folder stay as they were
SPAN_ROWS_BEFORE = {1: ("8a9f6ee48fa3057fa7c58ea3e80063703a096511c5a940e0aa58e58fa2946f17", "size200-seed1-f4b23904637b"),
                    7: ("fa076098dc18aa2f34484c0a9b11e7a64ea8dda7a8ceac2d7907c91c5e3b64f9", "size200-seed7-0233d25acc26")}


def test_sentence_answers_are_in_their_own_corpus_and_the_default_is_unchanged():
    """``qa_answers: sentence`` adds every wording to the manifest's questions and builds into another
    cache folder, so a corpus cached before (span answers only) is never read as if it had them; the
    default rows and folder are byte-identical to the ones before the option."""
    import hashlib

    from speechrl.data.tasks import pick_wording, task_examples
    from speechrl.pipelines.common import corpus_dir_for

    for seed, (digest, folder) in SPAN_ROWS_BEFORE.items():
        cfg = CorpusConfig(size=200, seed=seed)
        rows = plan(cfg)[1]
        assert hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest() == digest
        assert corpus_dir_for(cfg).name == folder
    sentence = CorpusConfig(size=200, seed=1, qa_answers="sentence")
    assert corpus_dir_for(sentence) != corpus_dir_for(CorpusConfig(size=200, seed=1))
    span_rows, rows = plan(CorpusConfig(size=200, seed=1))[1], plan(sentence)[1]
    assert [{**r, "questions": [{k: v for k, v in q.items() if k != "answers"} for q in r["questions"]]}
            for r in rows] == span_rows  # the same rows, the wordings added
    qa = rows[0]["questions"][0]
    assert rows[0]["text"] == "Emma walked to the forest on Friday afternoon."
    assert qa == {"question": "Where did Emma walk?", "answer": "to the forest",
                  "answers": ["Emma walked to the forest.", "She walked to the forest.", "Emma went to the forest."]}
    # spoken QA trains on one wording per example (seeded by its id) and scores against all of them
    examples = task_examples(rows, "sqa", max_questions=2)
    assert all(e.reference == pick_wording(e.id, e.references) and e.columns()["references"] == e.references
               for e in examples)
    assert len({e.reference == e.references[0] for e in examples}) == 2  # not always the first
    span = task_examples(span_rows, "sqa", max_questions=2)
    assert span[0].reference == "to the forest" and span[0].columns()["references"] == ["to the forest"]
