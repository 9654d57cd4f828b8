"""Lexicon words: recognized phoneme units read as the words of a pronunciation lexicon.

Recognition spells one word many ways (a grammar word's recognized units match its G2P phonemes about
half the time, with ≈ 15 variants a word across voices) and puts word boundaries in the wrong places
(four stories in five have a different word count from their text), so a unit LM never sees the same
token twice for the same word — and a unit LM that does not, never learns to read a story (issue 24,
docs/results.md). This module snaps a recognized unit stream to the closest sequence of lexicon words:

* the recognizer's word boundaries cut the stream into segments ``g₁ … g_k``;
* a dynamic programme over the segments picks, at each step, the cheapest of: one segment as one word
  (cost ``lev(g, w)``, the Levenshtein distance between the segment's units and the word's
  pronunciation), two segments as one word (a spurious boundary: ``lev(g g', w) + μ``), one segment as
  two words (a missed boundary, every cut: ``lev(a, w) + lev(b, w') + μ``), or a segment dropped
  (``len(g) + 1``);
* each candidate's nearest word comes from ``rapidfuzz.process.cdist`` over the lexicon, cached.

There is no language model: every word is equally likely, so the words follow from the sounds alone.
Pronunciations come from hama's G2P (:func:`~speechrl.speech.units.g2p.word_phoneme_ids`), the same
phoneme ids the recognizer emits; :meth:`LexiconWords.units` gives a word sequence back as units (a word
boundary before each word) — what a vocoder speaks.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Iterable, Sequence

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from speechrl.speech.units.bpe import unit_chars
from speechrl.speech.units.phoneme import WORD_BOUNDARY_ID

def segments(units: Sequence[int], boundary: int = WORD_BOUNDARY_ID) -> list[list[int]]:
    """The unit stream cut at word boundaries, empty pieces dropped."""
    out: list[list[int]] = [[]]
    for u in units:
        if u == boundary:
            out.append([])
        else:
            out[-1].append(int(u))
    return [s for s in out if s]


class LexiconWords:
    """Unit streams ↔ word-id sequences over ``words`` (ids ``0 .. len(words) − 1``, in the given order)."""

    def __init__(self, words: Sequence[str], pronunciations: Sequence[Sequence[int]], merge_cost: float = 1.0,
                 forms: Sequence[str] | None = None):
        if len(words) != len(pronunciations) or not words:
            raise ValueError("need one pronunciation for each word, and at least one word")
        if len(set(words)) != len(words):
            raise ValueError("the lexicon lists a word twice")
        self.words = list(words)
        self.forms = list(forms or words)  # how each word is written (case kept): what a text LM reads
        self.pronunciations = [tuple(int(u) for u in p) for p in pronunciations]
        self.merge_cost = float(merge_cost)
        self._prons = [unit_chars(p) for p in self.pronunciations]
        self._nearest: dict[str, tuple[float, int]] = {}

    @classmethod
    def from_texts(cls, texts: Iterable[str], words: Iterable[str] = (), merge_cost: float = 1.0) -> "LexiconWords":
        """The lexicon of the words ``texts`` hold (:func:`~speechrl.speech.units.g2p.g2p_words`, sorted) and of
        ``words`` the texts lack, pronounced by hama's G2P; each word's written form is the lowercase one where
        the texts write it so, else its most frequent spelling there (a name: "Peter")."""
        from speechrl.speech.units.g2p import g2p_words, word_phoneme_ids

        spellings: dict[str, Counter] = {}
        for text in texts:
            for raw in text.split():
                if len(norm := g2p_words(raw)) == 1:
                    spellings.setdefault(norm[0], Counter())[raw.strip(string.punctuation)] += 1
        for word in words:
            for norm in g2p_words(word):
                spellings.setdefault(norm, Counter({norm: 1}))
        if not spellings:
            raise ValueError("no words in the texts: a lexicon needs transcripts")
        words = sorted(spellings)
        forms = [w if w in spellings[w] else spellings[w].most_common(1)[0][0] or w for w in words]
        return cls(words, [word_phoneme_ids(w) for w in words], merge_cost, forms)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def _lookup(self, pieces: set[str]) -> None:
        new = [p for p in pieces if p not in self._nearest]
        if new:
            for piece, row in zip(new, process.cdist(new, self._prons, scorer=Levenshtein.distance)):
                j = int(row.argmin())
                self._nearest[piece] = (float(row[j]), j)

    def encode(self, units: Sequence[int]) -> list[int]:
        """The cheapest word-id sequence for a recognized unit stream (see the module docstring)."""
        segs = [unit_chars(s) for s in segments(units)]
        k, mu = len(segs), self.merge_cost
        pieces = set(segs) | {segs[i] + segs[i + 1] for i in range(k - 1)}
        pieces |= {part for g in segs for p in range(1, len(g)) for part in (g[:p], g[p:])}
        self._lookup(pieces)
        near = self._nearest
        best, back = [0.0] + [float("inf")] * k, [(0, [])] * (k + 1)
        for i, g in enumerate(segs):
            options = [(i + 1, near[g][0], [near[g][1]]), (i + 1, len(g) + 1.0, [])]
            if i + 1 < k:
                cost, w = near[g + segs[i + 1]]
                options.append((i + 2, cost + mu, [w]))
            for p in range(1, len(g)):
                (ca, wa), (cb, wb) = near[g[:p]], near[g[p:]]
                options.append((i + 1, ca + cb + mu, [wa, wb]))
            for j, cost, w in options:
                if best[i] + cost < best[j]:
                    best[j], back[j] = best[i] + cost, (i, w)
        out, j = [], k
        while j > 0:
            i, w = back[j]
            out[:0] = w
            j = i
        return out

    def encode_batch(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        return [self.encode(s) for s in sequences]

    def decode(self, tokens: Sequence[int]) -> list[str]:
        return [self.words[int(t)] for t in tokens]

    def units(self, tokens: Sequence[int]) -> list[int]:
        """The words' pronunciations as one unit stream, a word boundary before each word."""
        return [u for t in tokens for u in (WORD_BOUNDARY_ID, *self.pronunciations[int(t)])]
