"""TTS LM and Token2Text on tiny random models: vocabulary round trip, generation ↔ teacher forcing,
padding invariance, soft inputs ≡ one-hot ids, save/load."""

import torch

from speechrl.speech.units import WORD_BOUNDARY_ID, Units

UNIT_IDS = [3, 7, 12, 40, WORD_BOUNDARY_ID]


def tiny_vocab():
    from speechrl.models.tts_lm import SpeechVocab

    return SpeechVocab(UNIT_IDS)


def _llama_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True)


def tiny_tts_lm(seed: int = 0, vocab=None, text_input: str = "bpe"):
    """A TTSLM over a 2-layer random Llama with the real SmolLM2 tokenizer, reading ``text_input``."""
    from transformers import LlamaModel

    from speechrl.models.hub import load_tokenizer
    from speechrl.models.tts_lm import TTSLM

    torch.manual_seed(seed)
    tok = load_tokenizer("smollm2-135m")
    return TTSLM(LlamaModel(_llama_config(len(tok))), tok, vocab or tiny_vocab(), "tiny", text_input)


def tiny_token2text(seed: int = 1, vocab=None, rate_classes=()):
    from transformers import LlamaForCausalLM

    from speechrl.models.hub import load_tokenizer
    from speechrl.models.token2text import Token2Text

    torch.manual_seed(seed)
    tok = load_tokenizer("smollm2-135m")
    return Token2Text(LlamaForCausalLM(_llama_config(len(tok))), tok, vocab or tiny_vocab(), rate_classes, "tiny")


def test_vocab_round_trip_and_duration_classes():
    from collections import Counter

    from speechrl.models.tts_lm import SpeechVocab

    units = [Units([WORD_BOUNDARY_ID, 3, 7, 99, 12], [20, 1, 5, 2, 3]), Units([40, 3], [9, 4])]
    vocab = SpeechVocab.fit(units)
    assert vocab.unit_ids == [3, 7, 12, 40, 99, WORD_BOUNDARY_ID]
    assert [vocab.duration_class(d) for d in (1, 2, 3, 4, 5, 6, 8, 9, 13, 14, 50)] == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert vocab.duration_values == [1, 2, 3, 4, 6, 9, 20]  # medians; the empty 6–8 class keeps its bound
    small = tiny_vocab()
    unknown = Counter()
    tokens = small.encode(units[0], unknown)
    assert unknown == Counter({99: 1}) and len(tokens) == 4
    back = small.decode(tokens + [small.eos_id, 0, 1])
    assert back.ids == [WORD_BOUNDARY_ID, 3, 7, 12] and back.kind == "phoneme"
    assert back.durations == [small.duration_values[small.duration_class(d)] for d in (20, 1, 5, 3)]
    assert SpeechVocab.from_dict(small.to_dict()).to_dict() == small.to_dict()


def test_generation_matches_teacher_forcing_and_padding():
    model = tiny_tts_lm().eval()
    texts = ["Anna went home.", "The next day, Oliver ran to the beach with Lucy."]
    enc = model.encode(texts)
    ids = model.generate(enc, 12, do_sample=False)
    mask = model.completion_mask(ids)
    logits = model.speech_logits(enc, ids, mask)
    assert logits.shape == (2, ids.shape[1], model.vocab.output_size)
    greedy = logits.argmax(-1)
    greedy[:, 0] = ids[:, 0]  # the first step forbids EOS (min_new_tokens = 1)
    assert torch.equal((greedy == ids)[mask.bool()], torch.ones(int(mask.sum()), dtype=torch.bool))
    alone = model.speech_logits(model.encode(texts[:1]), ids[:1], mask[:1])  # no left padding
    n = int(mask[0].sum())
    torch.testing.assert_close(alone[0, :n], logits[0, :n], atol=1e-4, rtol=1e-4)
    gen = torch.Generator().manual_seed(5)
    sampled = model.generate(enc.repeat(3), 10, temperature=1.0, top_k=5, generator=gen)
    assert sampled.shape[0] == 6 and (sampled[:, 0] != model.vocab.eos_id).all()


def test_token2text_soft_equals_ids_and_padding():
    model = tiny_token2text().eval()
    v = model.vocab.num_unit_tokens
    ids = torch.tensor([[1, 5, 9, 0], [2, 3, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    text_ids, text_mask = model.text_targets(["Anna went home.", "Hi."])
    from_ids = model.text_logprob(ids, mask, text_ids, text_mask)
    soft = torch.nn.functional.one_hot(ids, v).float().requires_grad_(True)
    from_soft = model.text_logprob(soft, mask, text_ids, text_mask)
    torch.testing.assert_close(from_ids, from_soft)
    alone = model.text_logprob(ids[1:, :2], mask[1:, :2], *model.text_targets(["Hi."]))
    torch.testing.assert_close(alone, from_ids[1:], atol=1e-4, rtol=1e-4)
    from_soft.sum().backward()
    assert torch.isfinite(soft.grad).all() and soft.grad[0].abs().sum() > 0
    assert soft.grad[1, 2:].abs().sum() == 0  # padded positions get no gradient
    assert len(model.transcribe(ids, mask, max_new_tokens=4)) == 2


def test_save_and_load_round_trip(tmp_path):
    from speechrl.models.token2text import Token2Text
    from speechrl.models.tts_lm import TTSLM

    model = tiny_tts_lm().eval()
    enc_texts = ["Anna went home."]
    ids = torch.tensor([[1, 4, model.vocab.eos_id]])
    mask = torch.ones(1, 3)
    before = model(model.encode(enc_texts), ids, mask)
    loaded = TTSLM.from_pretrained(model.save_pretrained(tmp_path / "tts")).eval()
    torch.testing.assert_close(loaded(loaded.encode(enc_texts), ids, mask), before)
    t2t = tiny_token2text(rate_classes=[0.9, 1.0, 1.1]).eval()
    text_ids, text_mask = t2t.text_targets(["Hi."])
    units, umask = torch.tensor([[1, 2]]), torch.ones(1, 2)
    t2t_loaded = Token2Text.from_pretrained(t2t.save_pretrained(tmp_path / "t2t")).eval()
    torch.testing.assert_close(t2t_loaded.text_logprob(units, umask, text_ids, text_mask),
                               t2t.text_logprob(units, umask, text_ids, text_mask))
    torch.testing.assert_close(t2t_loaded.rate_logits(units, umask), t2t.rate_logits(units, umask))
