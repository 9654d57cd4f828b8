"""What a TTS LM reads (``model.text_input``): a text's phonemes are hama's G2P in the speech units' own
ids (checked against hama's G2P and against the units hama's ASR hears in real speech of the text), and a
TTS LM that reads them embeds exactly them and trains on them."""

import pytest
import torch
from rapidfuzz.distance import Levenshtein

from conftest import speak
from speechrl.speech.units import WORD_BOUNDARY_ID, Units, text_phonemes
from test_tts_models import tiny_tts_lm

TEXT = "Peter went to the beach on Saturday."


def test_text_phonemes_are_hamas_g2p_in_the_units_ids(phon):
    from hama import G2PModel

    units = text_phonemes(TEXT)
    assert units.durations is None and units.ids.count(WORD_BOUNDARY_ID) == len(TEXT.split()) - 1
    hama = G2PModel().predict("peter went to the beach on saturday")  # hama's own sentence output
    assert phon.ipa([i for i in units.ids if i != WORD_BOUNDARY_ID]) == [a.phoneme for a in hama.alignments]
    assert text_phonemes("PETER,  went to the beach on Saturday!").ids == units.ids  # case, punctuation
    # the same ids as the units hama's ASR extracts from real speech of the text
    heard = [i for i in phon.encode(speak([TEXT])[0]).ids if i != WORD_BOUNDARY_ID]
    written = [i for i in units.ids if i != WORD_BOUNDARY_ID]
    assert Levenshtein.normalized_distance(written, heard) < 0.35, (phon.ipa(written), phon.ipa(heard))


@pytest.mark.parametrize("text_input", ["phonemes", "both"])
def test_tts_lm_reads_the_phonemes_and_trains_on_them(tmp_path, text_input):
    from speechrl.models.tts_lm import TTSLM, SpeechVocab
    from speechrl.trainers.sft import SFTConfig
    from speechrl.trainers.tts_sft import TTSExample, train_tts_lm

    ids = text_phonemes(TEXT).ids
    model = tiny_tts_lm(text_input=text_input, vocab=SpeechVocab(sorted(set(ids))))
    bpe = model.tokenizer(TEXT, add_special_tokens=False)["input_ids"] if text_input == "both" else []
    enc = model.encode([TEXT, "Anna ran."])
    assert int(enc["mask"][0].sum()) == len(bpe) + len(ids) + 1  # [BPE] [phonemes] [SOS]
    torch.testing.assert_close(enc["embeds"][0, len(bpe):-1], model.phoneme_embed(torch.tensor(ids)))
    # SFT trains the phoneme embeddings with the new parts, and the NLL of the targets falls
    units = Units(ids[:12], [3] * 12, "phoneme")
    before = model.phoneme_embed.weight.detach().clone()
    examples = [TTSExample("a", TEXT, units, 2.0)]
    cfg = SFTConfig(lr=1e-3, new_lr=1e-2, batch_size=1, max_steps=20, warmup_steps=0, eval_every=20, patience=0)
    result = train_tts_lm(model, examples, examples, cfg, tmp_path / "sft")
    assert result["best_score"] > result["start_score"] + 0.5
    assert not torch.equal(model.phoneme_embed.weight[ids[0]], before[ids[0]])
    # save / load keeps what the model reads
    loaded = TTSLM.from_pretrained(model.save_pretrained(tmp_path / "tts")).eval()
    assert loaded.text_input == text_input
    target, mask = model.eval().target_tokens([units])
    torch.testing.assert_close(loaded(loaded.encode([TEXT]), target, mask), model(model.encode([TEXT]), target, mask))
