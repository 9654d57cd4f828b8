"""Acoustic words: a byte-pair encoding over deduplicated speech units.

Frequent unit n-grams are merged into single tokens, so a unit LM reads word-like tokens and a whole
story fits its context in a few times fewer positions (the grammar's stories: ≈ 170 phoneme units,
≈ 45 tokens at 2,000 merges' worth of vocabulary). Merges never cross the word-boundary unit, which
stays a token of its own: a token is a piece of one spoken word.

Hugging Face ``tokenizers`` does the work (``models.BPE`` + ``trainers.BpeTrainer``): unit ``u`` is the
character ``chr(0xE000 + u)`` (Unicode's private-use area, which no normaliser touches), the
pre-tokenizer isolates the word-boundary character, and every unit is in the initial alphabet, so any
unit sequence encodes and ``decode(encode(units)) == units`` exactly. Token ids are ``0 .. vocab_size − 1``.
Saved as one ``tokenizer.json`` (plus the unit count), loaded without pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from speechrl.speech.units.phoneme import BLANK_ID, WORD_BOUNDARY_ID

_BASE = 0xE000


def unit_chars(units: Iterable[int]) -> str:
    """Units as a string, unit ``u`` the private-use character ``chr(0xE000 + u)``: what string tools
    (``tokenizers``, ``rapidfuzz``) work on."""
    return "".join(chr(_BASE + int(u)) for u in units)


class UnitBPE:
    """Unit sequences ↔ token sequences of a trained BPE (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, num_units: int):
        self.tokenizer, self.num_units = tokenizer, int(num_units)
        vocab = tokenizer.get_vocab()
        self._pieces: list[list[int]] = [[]] * len(vocab)
        for piece, i in vocab.items():
            self._pieces[i] = [ord(c) - _BASE for c in piece]
        missing = [u for u in range(self.num_units) if chr(_BASE + u) not in vocab]
        if missing:
            raise ValueError(f"the BPE vocabulary lacks units {missing[:5]}…: it cannot encode every unit sequence")

    @classmethod
    def train(cls, sequences: Iterable[Sequence[int]], vocab_size: int, num_units: int = BLANK_ID,
              boundary: int = WORD_BOUNDARY_ID, min_frequency: int = 2) -> "UnitBPE":
        """Learn merges on ``sequences`` (deduplicated unit ids ``0 .. num_units − 1``) up to ``vocab_size``
        tokens (the ``num_units`` single units included)."""
        if vocab_size < num_units:
            raise ValueError(f"vocab_size {vocab_size} is smaller than the {num_units} units it must hold")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Split(chr(_BASE + boundary), behavior="merged_with_next")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=[chr(_BASE + u) for u in range(num_units)],
                                      limit_alphabet=num_units)
        tokenizer.train_from_iterator((unit_chars(s) for s in sequences), trainer)
        return cls(tokenizer, num_units)

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def encode(self, units: Sequence[int]) -> list[int]:
        if any(not 0 <= int(u) < self.num_units for u in units):
            raise ValueError(f"unit ids must be in 0..{self.num_units - 1}")
        return self.tokenizer.encode(unit_chars(units)).ids if len(units) else []

    def encode_batch(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        return [self.encode(s) for s in sequences]

    def decode(self, tokens: Sequence[int]) -> list[int]:
        return [u for t in tokens for u in self._pieces[int(t)]]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps({"num_units": self.num_units, "tokenizer": json.loads(self.tokenizer.to_str())}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "UnitBPE":
        data = json.loads(Path(path).read_text())
        return cls(Tokenizer.from_str(json.dumps(data["tokenizer"])), data["num_units"])
