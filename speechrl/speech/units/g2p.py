"""Text → phoneme units with hama's G2P (grapheme-to-phoneme) model: the one home of the text-to-phoneme
conversion.

hama 1.7.0's G2P decodes into the same 189-symbol decoder vocabulary as its phoneme ASR, so a text's
phonemes and the units :class:`~speechrl.speech.units.PhonemeUnitTokenizer` extracts from its speech
share ids (``0..188``), with :data:`~speechrl.speech.units.WORD_BOUNDARY_ID` between words. That is
what lets a TTS LM read the phonemes it has to speak (:class:`~speechrl.models.tts_lm.TTSLM`,
``text_input``).

hama predicts each whitespace-separated word on its own (``G2PModel.predict`` splits on ``\\s+``), so
a per-word cache gives exactly its sentence output. Words are lowercased and stripped of
punctuation first: hama's input alphabet is lowercase, and punctuation is not spoken. The result has
no durations (``Units.durations`` is None): those are what speech adds.
"""

from __future__ import annotations

import functools
import threading
import unicodedata

from speechrl.speech.units.base import Units
from speechrl.speech.units.phoneme import WORD_BOUNDARY_ID

__all__ = ["g2p_words", "word_phoneme_ids", "text_phonemes"]

_G2P_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _hama_g2p():
    """hama's G2P model, loaded once per process. Its decoder vocabulary is the file
    :func:`~speechrl.speech.units.hama_tokens` reads for the ASR units too."""
    from hama import G2PModel

    return G2PModel()


def g2p_words(text: str) -> list[str]:
    """The words hama's G2P reads: lowercased, split on whitespace, punctuation removed (an apostrophe
    inside a word stays: hama's alphabet has it); words left empty are dropped."""
    words = []
    for raw in text.lower().split():
        word = "".join(ch for ch in raw if ch == "'" or not unicodedata.category(ch).startswith("P")).strip("'")
        if word:
            words.append(word)
    return words


@functools.lru_cache(maxsize=1 << 16)
def word_phoneme_ids(word: str) -> tuple[int, ...]:
    """hama G2P phoneme ids of one normalised word (:func:`g2p_words`), cached per process."""
    model = _hama_g2p()
    index = model.vocab.decoder_token_to_id
    with _G2P_LOCK:  # one native session per process; keep calls serial
        result = model.predict(word, split_delimiter=None)
    return tuple(index[a.phoneme] for a in result.alignments)


def text_phonemes(text: str) -> Units:
    """A text's phonemes as units (hama ids, a word boundary between words, no durations)."""
    ids: list[int] = []
    for word in g2p_words(text):
        if ids:
            ids.append(WORD_BOUNDARY_ID)
        ids += word_phoneme_ids(word)
    return Units(ids, None, "phoneme", 50.0)
