"""The open-vocabulary corpus text (WordNet 3.0 example sentences) and seeded additive noise."""

import numpy as np
import pytest

from speechrl.corpus.build import CorpusConfig, add_noise, build_corpus, load_manifest, plan
from speechrl.corpus.wordnet import _keywords, wordnet_sentences, wordnet_stories


def test_wordnet_gives_thousands_of_plain_sentences_over_a_large_vocabulary():
    pool = wordnet_sentences()
    words = {w.strip(",.?!;").lower() for text, _ in pool for w in text.split()}
    assert len(pool) > 20_000 and len(words) > 15_000
    assert all(5 <= len(t.split()) <= 16 and t[0].isupper() and t[-1] in ".?!" for t, _ in pool)
    assert len({t.lower() for t, _ in pool}) == len(pool)  # distinct
    assert sum(bool(kw) for _, kw in pool) > 0.8 * len(pool)  # most carry the word they illustrate


def test_keywords_are_the_synset_words_the_sentence_uses():
    assert _keywords("He enfeoffed his son-in-law with a large estate", ["enfeoff"]) == ["enfeoffed"]
    assert _keywords("the glare of the sun snow-blinded her", ["glare", "blaze", "blazing"]) == ["glare"]
    assert _keywords("they ran all the way", ["run"]) == []  # irregular forms are not guessed
    assert _keywords("a field crop", ["field crop"]) == []  # multi-word lemmas are not keywords


def test_stories_are_seeded_and_splits_never_share_a_sentence():
    a, b = wordnet_stories(50, seed=1), wordnet_stories(50, seed=1)
    assert [s.sentences[0].text for s in a] == [s.sentences[0].text for s in b]
    assert [s.sentences[0].text for s in a] != [s.sentences[0].text for s in wordnet_stories(50, seed=2)]
    cfg = CorpusConfig(size=120, seed=4, text="wordnet", voices=["espeak-us-m1", "espeak-gb-m6"],
                       test_voice="espeak-us-f2", evaluate=False)
    _, rows = plan(cfg)
    by_split = {s: {r["text"] for r in rows if r["split"] == s} for s in ("train", "dev", "test")}
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["dev"]
    assert all(r["voice"] != "espeak-us-f2" for r in rows if r["split"] != "test")
    assert {r["voice"] for r in rows if r["split"] == "test"} >= {"espeak-us-f2"}
    assert all(r["translation"] == "" and r["questions"] == [] for r in rows)


def test_noise_is_seeded_and_at_the_asked_snr():
    t = np.arange(16000) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = add_noise(wav, 10.0, "utt-1")
    assert np.array_equal(noisy, add_noise(wav, 10.0, "utt-1"))
    assert not np.array_equal(noisy, add_noise(wav, 10.0, "utt-2"))
    snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean((noisy - wav).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)


def test_a_noisy_wordnet_corpus_builds_and_records_each_snr(tmp_path):
    cfg = CorpusConfig(size=12, seed=2, text="wordnet", voices=["espeak-us-m1", "espeak-gb-m6"],
                       test_voice="espeak-us-f2", noise_snr_db=[5.0, 15.0], evaluate=False, workers=1)
    summary = build_corpus(cfg, tmp_path)
    rows = load_manifest(tmp_path)
    assert summary["rejected"] == 0 and len(rows) == summary["num_utterances"] >= 12
    assert {r["snr_db"] for r in rows} <= {5.0, 15.0} and all(r["duration"] > 0.5 for r in rows)
