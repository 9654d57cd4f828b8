"""Native HF speech LMs as policies, on tiny random configs of the real classes (offline tokenizers)."""

import json

import numpy as np
import pytest
import torch
from transformers import (GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, Qwen2AudioConfig,
                          Qwen2AudioForConditionalGeneration, WhisperConfig, WhisperForConditionalGeneration,
                          WhisperFeatureExtractor)

from speechrl.models.hub import load_tokenizer
from speechrl.models.native import (GraniteLogMel, GraniteSpeechPolicy, Qwen2AudioPolicy, WhisperPolicy,
                                    collate_mel, load_policy, whisper_mel_features)
from speechrl.models.policy import PromptBatch, completion_mask
from speechrl.speech.transcribe import offline_whisper_tokenizer

KINDS = ["qwen2_audio", "granite_speech", "whisper"]
TEXTS = ["Transcribe the audio.", "Answer: where did Jack walk, and why did he go there?", "Translate."]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; with 2 OpenMP threads on 2 busy shared cores every op here
    was ~100× slower (spin-waiting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smol_tokenizer():
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def whisper_tokenizer():
    return offline_whisper_tokenizer()


def make_qwen2_audio(tokenizer) -> Qwen2AudioPolicy:
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)  # a fresh copy to add tokens to
    tok.pad_token = tok.eos_token
    tok.add_tokens(["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"], special_tokens=True)
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=1, d_model=32,
                          encoder_attention_heads=2, encoder_ffn_dim=64, max_source_positions=100),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    fe = WhisperFeatureExtractor(feature_size=128, chunk_length=2)  # 200 frames = 2 × max_source_positions
    return Qwen2AudioPolicy(Qwen2AudioForConditionalGeneration(cfg).eval(), tok, fe)


def granite_model(vocab_size: int, audio_token_id: int) -> GraniteSpeechForConditionalGeneration:
    cfg = GraniteSpeechConfig(
        text_config=dict(model_type="granite", vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         embedding_multiplier=2.0, logits_scaling=4.0, initializer_range=0.2),
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=32, feedforward_mult=2, num_heads=2,
                            output_dim=8, context_size=20, max_pos_emb=32, dropout=0.0, conv_kernel_size=5),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                              initializer_range=0.2),  # with 0.02 the Q-Former output barely depends on the audio
        audio_token_index=audio_token_id, window_size=15, downsample_rate=5, has_lora_adapter=False)
    return GraniteSpeechForConditionalGeneration(cfg).eval()


def granite_tokenizer(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.pad_token = tok.eos_token
    tok.add_tokens(["<|audio|>"], special_tokens=True)
    return tok


def make_granite(tokenizer) -> GraniteSpeechPolicy:
    tok = granite_tokenizer(tokenizer)
    return GraniteSpeechPolicy(granite_model(len(tok), tok.convert_tokens_to_ids("<|audio|>")), tok)


def make_whisper(tokenizer, instruction="prompt") -> WhisperPolicy:
    # init_std=1.0: with the default 0.02 every input decodes the same
    cfg = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_source_positions=100, max_target_positions=128, init_std=1.0)
    return WhisperPolicy(WhisperForConditionalGeneration(cfg).eval(), tokenizer, instruction=instruction)


@pytest.fixture(scope="module")
def policies(smol_tokenizer, whisper_tokenizer):
    torch.manual_seed(0)
    return {"qwen2_audio": make_qwen2_audio(smol_tokenizer), "granite_speech": make_granite(smol_tokenizer),
            "whisper": make_whisper(whisper_tokenizer)}


def waves(seed, lengths=(0.5, 1.5, 1.2)):
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in lengths]


def batch(policy, seed=0):
    return PromptBatch([policy.featurize(w) for w in waves(seed)], list(TEXTS))


def audio_params(policy):
    inner = policy.model.model
    if isinstance(policy, Qwen2AudioPolicy):
        return [*inner.audio_tower.parameters(), *inner.multi_modal_projector.parameters()]
    if isinstance(policy, GraniteSpeechPolicy):
        return [*inner.encoder.parameters(), *inner.projector.parameters()]
    return list(inner.encoder.parameters())


def prompt_lengths(enc):
    mask = enc["mask"] if "mask" in enc.tensors else enc["prefix_mask"]
    return mask.sum(-1).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forced_logps_match_generation_scores(policies, kind):
    """Greedy generation from left-padded prompts of different lengths scores its own tokens exactly as
    teacher forcing does: the padding, the positions and the audio splice are right."""
    policy = policies[kind]
    enc = policy.encode(batch(policy))
    assert len(set(prompt_lengths(enc))) == 3
    ids, gen_logps = policy.generate(enc, max_new_tokens=6, return_logps=True)
    assert ids.shape[0] == 3 and ids.shape[1] <= 6 and gen_logps.shape == ids.shape
    mask = completion_mask(ids, policy.eos_token_id)
    with torch.no_grad():
        tf_logps = policy.completion_logps(enc, ids, mask)
    assert torch.allclose(tf_logps * mask, gen_logps * mask, atol=1e-4)


def native_logps(policy, wav, text, completion, model=None):
    """The same completion scored by the HF model's own forward (``policy.model`` unless ``model`` is
    given) from processor-style inputs: expanded audio tokens + input_features, one clip."""
    model, feats = model or policy.model, policy.featurize(wav)
    if isinstance(policy, WhisperPolicy):
        mel, _ = collate_mel([feats])
        prefix = policy.prefix_ids(text)
        logits = model(input_features=mel, decoder_input_ids=torch.tensor([prefix + completion])).logits
    else:
        if isinstance(policy, Qwen2AudioPolicy):
            mel, lengths = collate_mel([feats])
            n = int(model.model.audio_tower._get_feat_extract_output_lengths(lengths)[1])
            kw = dict(input_features=mel,
                      feature_attention_mask=(torch.arange(mel.shape[-1]) < lengths[0])[None].long())
        else:
            n = policy.feature_extractor.num_embeddings(len(wav))
            kw = dict(input_features=torch.as_tensor(feats["mel"])[None])
        prefix = policy.prompt_ids(n, text)
        logits = model(input_ids=torch.tensor([prefix + completion]), **kw).logits
    lp = torch.log_softmax(logits[0, len(prefix) - 1: -1], -1)
    return lp.gather(1, torch.tensor(completion)[:, None])[:, 0]


@pytest.mark.parametrize("kind", KINDS)
def test_audio_splice_matches_the_models_own_forward(policies, kind):
    """encode once + inputs_embeds gives what the HF model computes from input_ids + input_features."""
    policy = policies[kind]
    wav, completion = waves(3, (1.2,))[0], [262, 1000, 3000, 13]
    enc = policy.encode(PromptBatch([policy.featurize(wav)], [TEXTS[1]]))
    with torch.no_grad():
        ours = policy.completion_logps(enc, torch.tensor([completion]), torch.ones(1, 4))[0]
        ref = native_logps(policy, wav, TEXTS[1], completion)
    assert torch.allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_audio_features_reach_the_forward_pass(policies, kind):
    """Different audio → different logps, and the loss has a gradient on the encoder/projector."""
    policy = policies[kind]
    ids, mask = torch.randint(300, 1000, (3, 5)), torch.ones(3, 5)
    lp = policy.completion_logps(policy.encode(batch(policy)), ids, mask)
    with torch.no_grad():
        lp2 = policy.completion_logps(policy.encode(batch(policy, seed=7)), ids, mask)
    assert not torch.allclose(lp.detach(), lp2, atol=1e-4)
    (-lp.sum()).backward()
    grads = [p.grad for p in audio_params(policy) if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.zero_grad()


@pytest.mark.parametrize("kind", KINDS)
def test_repeat_equals_encoding_copies(policies, kind):
    policy = policies[kind]
    b = batch(policy)
    with torch.no_grad():
        rep = policy.encode(b).repeat(2)
        copies = policy.encode(PromptBatch([a for a in b.audio for _ in range(2)],
                                           [t for t in b.text for _ in range(2)]))
    assert rep.batch_size == 6 and rep.tensors.keys() == copies.tensors.keys()
    for key, t in rep.tensors.items():
        if key == "source":  # Whisper: each row's encoder output, kept once per clip and indexed
            t, other = rep.extra["encoder_hidden"][t], copies.extra["encoder_hidden"][copies[key]]
            assert rep.extra["encoder_hidden"].shape[0] == 3  # repeating did not copy the encoder output
        else:
            other = copies[key]
        assert t.shape == other.shape and torch.allclose(t, other, atol=1e-5), key


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_shapes(policies, kind):
    policy = policies[kind]
    ids = policy.generate(policy.encode(batch(policy)).repeat(2), max_new_tokens=4, do_sample=True, top_p=0.9)
    assert ids.shape[0] == 6 and ids.shape[1] <= 4 and ids.dtype == torch.long


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(policies, kind, tmp_path):
    policy = policies[kind]
    policy.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_policy(tmp_path / "m")
    assert type(loaded) is type(policy) and loaded.settings == policy.settings
    assert (loaded.eos_token_id, loaded.pad_token_id) == (policy.eos_token_id, policy.pad_token_id)
    b = batch(policy)
    assert all(np.array_equal(x, y) for a, c in zip(b.audio, [loaded.featurize(w) for w in waves(0)])
               for x, y in zip(a.values(), c.values()))
    ids, mask = torch.randint(300, 1000, (3, 4)), torch.ones(3, 4)
    with torch.no_grad():
        a = policy.completion_logps(policy.encode(b), ids, mask)
        c = loaded.completion_logps(loaded.encode(b), ids, mask)
    assert torch.allclose(a, c, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_lora_on_lm_is_merged_when_saving(smol_tokenizer, whisper_tokenizer, kind, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    policy = {"qwen2_audio": make_qwen2_audio, "granite_speech": make_granite,
              "whisper": make_whisper}[kind](whisper_tokenizer if kind == "whisper" else smol_tokenizer)
    assert not any(k.startswith("lm.") for k in policy.state_dict())
    policy.lm = get_peft_model(policy.lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    b, ids, mask = batch(policy), torch.randint(300, 1000, (3, 4)), torch.ones(3, 4)
    with torch.no_grad():
        before = policy.completion_logps(policy.encode(b), ids, mask)
        policy.save_pretrained(tmp_path / "m")
        after = policy.completion_logps(policy.encode(b), ids, mask)  # the live LoRA model is untouched
        loaded = load_policy(tmp_path / "m")
        merged = loaded.completion_logps(loaded.encode(b), ids, mask)
    assert any("lora_A" in n for n, _ in policy.named_parameters())
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    assert torch.equal(before, after) and torch.allclose(before, merged, atol=1e-5)


def test_granite_audio_adapter_is_merged(smol_tokenizer, tmp_path):
    """A checkpoint's audio LoRA (attached by transformers at load) is folded into the weights."""
    from peft import LoraConfig

    torch.manual_seed(2)
    tok = granite_tokenizer(smol_tokenizer)
    model = granite_model(len(tok), tok.convert_tokens_to_ids("<|audio|>"))
    folder = tmp_path / "g"
    model.save_pretrained(str(folder))  # base weights + adapter files side by side, as on the hub
    tok.save_pretrained(str(folder))
    model.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    # Granite's save_pretrained writes the adapter right (its base-weight save keeps the LoRA layers'
    # names in transformers 5.23, so the adapter files are taken from it and the base from above)
    model.save_pretrained(str(tmp_path / "a"))
    (folder / "adapter_model.safetensors").write_bytes((tmp_path / "a" / "adapter_model.safetensors").read_bytes())
    adapter_cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**adapter_cfg, "base_model_name_or_path": str(folder)}))
    policy = load_policy(folder)
    assert not any("lora" in n for n, _ in policy.named_parameters())
    wav, completion = waves(4, (1.0,))[0], [262, 1000, 13]
    enc = policy.encode(PromptBatch([policy.featurize(wav)], ["Hi"]))
    with torch.no_grad():
        ours = policy.completion_logps(enc, torch.tensor([completion]), torch.ones(1, 3))[0]
        # the reference: the original model, adapter on (HF enables it when input_features are given),
        # divided by logits_scaling as the policy does
        model.lm_head.register_forward_hook(lambda _m, _i, out: out / 4.0)
        ref = native_logps(policy, wav, "Hi", completion, model=model)
        model.disable_adapters()
        without = native_logps(policy, wav, "Hi", completion, model=model)
    assert torch.allclose(ours, ref, atol=1e-4) and not torch.allclose(ours, without, atol=1e-3)


def test_granite_logits_scaling_is_applied(policies):
    policy = policies["granite_speech"]
    enc = policy.encode(batch(policy))
    with torch.no_grad():
        logits = policy.model(inputs_embeds=enc["embeds"], attention_mask=enc["mask"]).logits
        hidden = policy.model.model(inputs_embeds=enc["embeds"], attention_mask=enc["mask"]).last_hidden_state
    assert policy.logits_scaling == 4.0
    assert torch.allclose(logits, hidden @ policy.model.lm_head.weight.T / 4.0, atol=1e-5)


def test_granite_features_are_counted_like_the_processor(policies):
    fe = policies["granite_speech"].feature_extractor
    for n in (8000, 16000, 24000, 16161):
        mel = fe(np.zeros(n, np.float32) + 0.01)
        assert mel.shape == ((n // 160 + 1) // 2, 160)
        with torch.no_grad():
            emb = policies["granite_speech"].audio_embeddings([{"mel": mel}])[0]
        assert emb.shape[0] == fe.num_embeddings(n)
    assert GraniteLogMel.from_config_dict({"melspec_kwargs": {"n_mels": 64, "hop_length": 100}}).hop_length == 100


def torchaudio_style_logmel(wav, n_fft=512, win=400, hop=160, n_mels=80, sr=16000):
    """Independent numpy reference of GraniteSpeechFeatureExtractor (torchaudio MelSpectrogram: periodic
    Hann window centred in n_fft, reflect padding, power 2, HTK mel filters as melscale_fbanks, no norm)."""
    window = np.zeros(n_fft)
    window[(n_fft - win) // 2: (n_fft - win) // 2 + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    x = np.pad(wav.astype(np.float64), n_fft // 2, mode="reflect")
    frames = np.stack([x[i * hop: i * hop + n_fft] for i in range(1 + len(wav) // hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # [frames, freq]
    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    f_pts = 700 * (10 ** (np.linspace(mel(0), mel(sr / 2), n_mels + 2) / 2595) - 1)
    slopes = f_pts[None, :] - freqs[:, None]
    fb = np.maximum(0, np.minimum(-slopes[:, :-2] / np.diff(f_pts)[:-1], slopes[:, 2:] / np.diff(f_pts)[1:]))
    logmel = np.log10(np.maximum(power @ fb, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8) / 4 + 1
    return logmel[: len(logmel) // 2 * 2].reshape(-1, 2 * n_mels)


def test_granite_log_mel_matches_the_torchaudio_definition():
    for wav in waves(6, (0.31, 1.0)):
        assert np.allclose(GraniteLogMel()(wav), torchaudio_style_logmel(wav), atol=2e-4)


def test_policy_modules_and_train_mode(policies):
    granite = policies["granite_speech"]
    assert granite.lm is granite.model.model.language_model
    assert policies["whisper"].lm is policies["whisper"].model.model.decoder
    granite.train()
    norms = [m for m in granite.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert norms and not any(m.training for m in norms) and granite.lm.training
    granite.eval()


def test_template_with_the_text_before_the_audio(smol_tokenizer):
    policy = make_qwen2_audio(smol_tokenizer)
    policy = Qwen2AudioPolicy(policy.model, policy.tokenizer, policy.feature_extractor,
                              template="{text}: {audio}", eos_token="<|endoftext|>")
    ids = policy.prompt_ids(2, "Hi")
    audio = policy.tokenizer.convert_tokens_to_ids(["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
    assert ids == policy.tokenizer("Hi: ")["input_ids"] + [audio[0], audio[1], audio[1], audio[2]]
    assert policy.eos_token_id == policy.tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_whisper_mel_features_are_stored_losslessly():
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=2)
    for wav in waves(5, (0.5, 2.5)):
        feats = whisper_mel_features(fe, wav)
        full = fe(wav, sampling_rate=16000, padding="max_length", return_tensors="np")["input_features"][0]
        mel, lengths = collate_mel([feats])
        assert feats["mel"].shape[1] <= full.shape[1] and np.array_equal(mel[0].numpy(), full)
        assert int(lengths[0]) == min(len(wav) // 160, 200)


def test_whisper_ignores_the_instruction_by_default(whisper_tokenizer):
    policy = make_whisper(whisper_tokenizer, instruction="ignore")
    enc = policy.encode(batch(policy))
    assert enc["prefix_mask"].all() and (enc["prefix"] == enc["prefix"][0]).all()
    assert whisper_tokenizer.convert_ids_to_tokens(enc["prefix"][0].tolist()) == \
        ["<|startoftranscript|>", "<|notimestamps|>"]


def hf_decoder_greedy(policy: WhisperPolicy, enc, max_new_tokens: int) -> torch.Tensor:
    """Greedy tokens of Hugging Face's own ``WhisperDecoder.forward``, one step a token on its
    ``EncoderDecoderCache`` with per-row cross-attention keys/values (what ``generate`` ran before
    :class:`SharedClipDecoder`)."""
    from speechrl.models.decoding import decode_cached

    step = lambda x, m, pos, c: policy._decoder_logits(x, m, pos, enc, c, keep=1)[:, -1]  # noqa: E731
    return decode_cached(step, enc["prefix"], enc["prefix_mask"], lambda t: t[:, None],
                         lambda logits, _t: logits.argmax(-1), max_new_tokens, policy.eos_token_id,
                         cache=policy.cross_attention_cache(enc))


def test_whisper_rows_share_their_clip_and_decode_like_hugging_face(policies):
    """repeat(G) rows attend to one set of cross-attention keys/values per clip: greedy tokens equal HF's
    decoder on per-row copies, the naive encode-every-copy batch, and rows in another order (select);
    left-padded prefixes of different lengths included. Sampled tokens' log-probs equal the teacher-forced
    ones at the sampling temperature (the trainer's rollout_logp_diff)."""
    policy = policies["whisper"]
    b = batch(policy)
    with torch.no_grad():
        enc = policy.encode(b).repeat(3)
        copies = policy.encode(PromptBatch([a for a in b.audio for _ in range(3)], [t for t in b.text for _ in range(3)]))
        order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
        assert len(set(prompt_lengths(enc))) == 3
        ours = policy.generate(enc, 12)
        assert torch.equal(ours, hf_decoder_greedy(policy, enc, 12))
        assert torch.equal(ours, policy.generate(copies, 12))
        assert torch.equal(ours[order], policy.generate(enc.select(order), 12))
        torch.manual_seed(0)
        ids, logps = policy.generate(enc, 12, do_sample=True, temperature=0.7, return_logps=True)
        mask = completion_mask(ids, policy.eos_token_id)
        teacher = policy.completion_logps(enc, ids, mask, temperature=0.7)
    assert len({tuple(r) for r in ids.tolist()}) > 3  # the 3 samples of a clip differ
    # 1e-3: HF's own step-by-step decoder is 2e-4 off the teacher-forced batch on this model too (float32
    # rounding on logits of ±40); the shared-clip decoder is 2e-5 off HF's
    assert torch.allclose(teacher * mask, logps * mask, atol=1e-3)


def test_whisper_decoding_runs_the_lora_layers(whisper_tokenizer):
    """A peft LoRA on the decoder (nonzero B) changes what generate decodes, exactly as HF's decoder sees it."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    policy = make_whisper(whisper_tokenizer)
    with torch.no_grad():
        enc = policy.encode(batch(policy)).repeat(2)
        before = policy.generate(enc, 10)
        policy.lm = get_peft_model(policy.lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "fc1"],
                                                         init_lora_weights=False))
        after = policy.generate(enc, 10)
        assert torch.equal(after, hf_decoder_greedy(policy, enc, 10))
    assert not torch.equal(before, after)


def test_load_policy_dispatch(tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="granite_speech.*qwen2_audio.*whisper"):
        load_policy(tmp_path / "llama")
    with pytest.raises(ValueError, match="no config.json"):
        load_policy(tmp_path)


def test_load_policy_reads_a_speech_lm_folder(smol_tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechrl.models.frontends import UnitFrontEnd
    from speechrl.models.speech_lm import SpeechLM

    cfg = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    SpeechLM(LlamaForCausalLM(cfg), smol_tokenizer, UnitFrontEnd(32, dim=16), {"kind": "units", "dim": 16}
             ).save_pretrained(tmp_path / "s")
    assert isinstance(load_policy(tmp_path / "s"), SpeechLM)


@pytest.mark.parametrize("kind", ["qwen2_audio", "granite_speech"])
def test_text_lm_exported_for_vllm_scores_like_the_policy(smol_tokenizer, kind, tmp_path):
    """What the vLLM engine serves: the policy's text LM (LoRA merged) as a plain causal-LM folder. From
    the same prompt embeddings it gives the policy's own teacher-forced log-probs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from speechrl.losses.logps import token_logps
    from speechrl.rollout import export_causal_lm

    torch.manual_seed(2)
    policy = {"qwen2_audio": make_qwen2_audio, "granite_speech": make_granite}[kind](smol_tokenizer)
    policy.lm = get_peft_model(policy.lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                     init_lora_weights=False))
    folder = export_causal_lm(policy, tmp_path / "lm")
    lm = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    assert "lora" not in json.dumps(list(lm.state_dict()))
    enc = policy.encode(batch(policy))
    ids, mask = torch.randint(300, 1000, (3, 4)), torch.ones(3, 4)
    with torch.no_grad():
        want = policy.completion_logps(enc, ids, mask)
        embeds = torch.cat([enc["embeds"], lm.get_input_embeddings()(ids)], 1)
        full = torch.cat([enc["mask"], mask.long()], 1)
        logits = lm(inputs_embeds=embeds, attention_mask=full, position_ids=(full.cumsum(-1) - 1).clamp(min=0)).logits
        got = token_logps(logits[:, enc["embeds"].shape[1] - 1: -1], ids)
    assert torch.allclose(want, got, atol=1e-5)


def test_whisper_is_refused_by_the_vllm_export(whisper_tokenizer, tmp_path):
    from speechrl.rollout import export_causal_lm

    with pytest.raises(ValueError, match="encoder-decoder.*rollout_engine: hf"):
        export_causal_lm(make_whisper(whisper_tokenizer), tmp_path / "lm")


def test_frozen_whisper_encoder_outputs_are_computed_once_and_cached(tmp_path, whisper_tokenizer, monkeypatch):
    from speechrl.data.features import cached_encodings

    torch.manual_seed(0)
    policy = make_whisper(whisper_tokenizer)
    feats = {f"u{i}": policy.featurize(w) for i, w in enumerate(waves(3))}
    assert policy.encoder_cache_key is None and cached_encodings(tmp_path, feats, policy) is feats  # it trains
    policy.model.model.encoder.requires_grad_(False)
    cached = cached_encodings(tmp_path, feats, policy)
    with torch.no_grad():
        fresh = policy.encoder_outputs(list(feats.values()))
        from_cache = policy.encoder_outputs(list(cached.values()))
    assert cached["u0"]["hidden"].dtype == np.float16
    assert torch.allclose(from_cache, fresh, atol=2e-2, rtol=2e-3)  # float16 storage
    monkeypatch.setattr(policy, "encoder_outputs", lambda _f: pytest.fail("encoded again"))
    again = cached_encodings(tmp_path, feats, policy)  # the second call (a rerun, the RL stage) reads the file
    assert np.array_equal(again["u2"]["hidden"], cached["u2"]["hidden"])
    with torch.no_grad():  # changed encoder weights: another key, never the stale outputs
        key = policy.encoder_cache_key
        policy.model.model.encoder.layer_norm.bias.add_(0.1)
        assert policy.encoder_cache_key != key
