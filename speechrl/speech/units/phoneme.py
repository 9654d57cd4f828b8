"""hama phoneme units: the pretrained phoneme CTC model's frames, CTC-collapsed into one unit per emitted
token with its duration (blank frames merged into the unit before; see :mod:`speechrl.speech.units`)."""

from __future__ import annotations

import functools
import threading
from typing import Sequence

import numpy as np

from speechrl.audio import SAMPLE_RATE
from speechrl.speech.units.base import Units, UnitTokenizer, mono_16k

_HAMA_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def hama_tokens() -> tuple[str, ...]:
    """hama's ASR output symbols indexed by id: decoder vocabulary + ``<wb>`` + ``<blank>``."""
    from hama import Vocabulary

    toks = tuple(Vocabulary.load().decoder) + ("<wb>", "<blank>")
    if toks[WORD_BOUNDARY_ID] != "<wb>" or len(toks) != BLANK_ID + 1:
        raise RuntimeError(f"unexpected hama vocabulary ({len(toks)} tokens); speechrl expects hama 1.7.0 "
                           "(blank=190, word boundary=189)")
    return toks


WORD_BOUNDARY_ID = 189  # hama 1.7.0: len(decoder vocabulary); checked against the model on load
BLANK_ID = 190
WORD_BOUNDARY = "|"  # what :meth:`PhonemeUnitTokenizer.ipa` shows for a word boundary


@functools.lru_cache(maxsize=1)
def _hama_asr():
    """The hama ASR model, loaded once per process."""
    from hama import ASRModel

    model = ASRModel()
    if model.blank_id != BLANK_ID:
        raise RuntimeError(f"unexpected hama ASR model (blank id {model.blank_id}); speechrl expects hama 1.7.0")
    return model


@functools.lru_cache(maxsize=1)
def _decode_config():
    """hama's default CTC decoding (temperature, blank bias), what its ``ASRModel`` applies."""
    from hama.asr import ASRDecodeConfig

    cfg = ASRDecodeConfig()
    if cfg.unk_bias or not cfg.collapse_repeats or cfg.temperature <= 0:
        raise RuntimeError(f"unexpected hama decoding defaults {cfg}; speechrl expects hama 1.7.0's")
    return cfg


def ctc_frames_to_units(frame_ids: Sequence[int], blank_id: int = BLANK_ID,
                        boundary_id: int = WORD_BOUNDARY_ID, frame_rate: float = 50.0,
                        kind: str = "phoneme") -> Units:
    """CTC frame ids → one unit per emission, blank frames merged into the preceding unit.

    A repeated id without a blank in between is one emission (CTC collapse). Leading blank frames
    become a leading word-boundary unit, so the durations sum to ``len(frame_ids)``. All-blank
    input gives a single word-boundary unit (silence).
    """
    ids: list[int] = []
    durs: list[int] = []
    lead = 0
    prev = None
    for t in frame_ids:
        t = int(t)
        if t == blank_id:
            if ids:
                durs[-1] += 1
            else:
                lead += 1
        elif t == prev:
            durs[-1] += 1
        else:
            ids.append(t)
            durs.append(1)
        prev = t
    if lead:
        if ids and ids[0] == boundary_id:
            durs[0] += lead
        else:
            ids.insert(0, boundary_id)
            durs.insert(0, lead)
    return Units(ids, durs, kind, frame_rate)


class PhonemeUnitTokenizer(UnitTokenizer):
    """Phoneme units from hama's frame-level CTC ids (pretrained, offline, 50 frames/s).

    ``encode`` returns CTC-collapsed units with durations (see the module docstring for blank
    handling); the word boundary (id 189) is kept as a unit so prompts can be cut at word ends.
    """

    name = "phoneme"
    frame_rate = 50.0

    def __init__(self, engine: str = "torch") -> None:
        if engine not in ("torch", "hama"):
            raise ValueError(f"engine must be 'torch' or 'hama', not {engine!r}")
        self.engine = engine
        self._toks = hama_tokens()

    @property
    def vocab_size(self) -> int:
        return BLANK_ID  # ids 0..189; the blank (190) never appears in units

    @property
    def model(self):
        return _hama_asr()

    def frame_ids(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> list[int]:
        """Raw argmax CTC ids, one per 20 ms frame (blank = 190 included), decoded as hama's
        ``ASRModel`` decodes them (its temperature and blank bias); the model runs in PyTorch
        (:mod:`~speechrl.speech.units.hama_torch`), or in hama's own engine with ``engine="hama"``."""
        wav = mono_16k(wav, sr)
        if self.engine == "hama":
            model = _hama_asr()
            with _HAMA_LOCK:  # one native session per process; keep calls serial
                res = model.transcribe_waveform(wav, SAMPLE_RATE)
            return [int(t) for t in res.frame_token_ids]
        from speechrl.speech.units.hama_torch import log_probs

        cfg = _decode_config()
        scores = log_probs(wav) / cfg.temperature
        scores[:, BLANK_ID] += cfg.blank_bias
        return scores.argmax(-1).tolist()

    def encode(self, wav: np.ndarray, sr: int = SAMPLE_RATE) -> Units:
        return ctc_frames_to_units(self.frame_ids(wav, sr), frame_rate=self.frame_rate, kind=self.name)

    def ipa(self, units: Units | Sequence[int]) -> list[str]:
        """IPA symbol of each unit (hama's vocabulary); word boundaries shown as ``"|"``."""
        ids = units.ids if isinstance(units, Units) else list(units)
        out = []
        for i in ids:
            if i == WORD_BOUNDARY_ID:
                out.append(WORD_BOUNDARY)
            elif 0 <= i < len(self._toks):
                out.append(self._toks[i])
            else:
                raise ValueError(f"unit id {i} outside the phoneme vocabulary (0..{BLANK_ID - 1})")
        return out

    def ipa_text(self, units: Units | Sequence[int]) -> str:
        """Words of space-separated IPA symbols joined by ``" | "`` (like hama's word_phoneme_text)."""
        words: list[list[str]] = [[]]
        for s in self.ipa(units):
            if s == WORD_BOUNDARY:
                if words[-1]:
                    words.append([])
            else:
                words[-1].append(s)
        return " | ".join(" ".join(w) for w in words if w)

    def from_ipa(self, symbols: Sequence[str], durations: Sequence[int] | None = None) -> Units:
        """Units from hama IPA symbols (``"|"``, ``" "`` or ``"<wb>"`` for a word boundary)."""
        index = {t: i for i, t in enumerate(self._toks)}
        ids = []
        for s in symbols:
            if s in (WORD_BOUNDARY, " ", "<wb>"):
                ids.append(WORD_BOUNDARY_ID)
            elif s in index and index[s] != BLANK_ID:
                ids.append(index[s])
            else:
                raise ValueError(f"{s!r} is not a hama phoneme symbol")
        return Units(ids, list(durations) if durations is not None else None, self.name, self.frame_rate)
