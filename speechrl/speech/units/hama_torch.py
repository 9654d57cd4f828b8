"""hama's phoneme recognizer in PyTorch: the weights hama 1.7.0 ships, ≈ 10× faster than its own engine.

hama runs its CTC phoneme model (``hama/assets/asr_waveform.hama``) in a native engine built for plain
SSE (no AVX2/FMA code in ``libhama.so``), one utterance at a time: ≈ 0.18 s for a 2.5-s sentence on
this project's CPU, the largest cost of building a corpus, its benchmarks and long-form stories. The
file is a ``HAMAPK`` package of named tensors (an ONNX export's initializers, fp32 front end and fp16
weights; see :func:`read_hamapk`) of a small Conformer, which this module runs in PyTorch
(``benchmarks/hama_torch.py``: speed and agreement with the engine).

The graph, read from the tensors' names and shapes and checked against the engine's log-probs
(``tests/test_units.py``; on grammar sentences of four voices ≥ 99.9 % of frames get the same argmax,
log-probs within ≈ 0.2):

- log-mel: the power of a centred STFT (the stored 400-tap real/imaginary kernels, hop 160, reflect
  padding) through the stored 80-band filter bank, ``log(max(·, 1e-10))``;
- subsampling: Conv1d 80 → 144 (kernel 3, stride 2) + GELU: 50 frames/s, ``n // 320 + 1`` frames;
- 4 Conformer blocks: ``x + ½·FFN(x)`` (LayerNorm, 144 → 576, SiLU, → 144); ``x + MHSA(LN(x))``
  (4 heads, no positional encoding); ``x + Conv(x)`` (LN, pointwise 144 → 288, GLU, depthwise kernel
  31 with its batch norm folded in, SiLU, pointwise); ``x + ½·FFN(x)``; LayerNorm;
- a 144 → 191 projection (190 = CTC blank), log-softmax.

A forward pass runs on one thread (``torch.set_num_threads(1)`` for its duration): the units must not
depend on a thread count, and a forked worker must not use the parent's OpenMP pool.
"""

from __future__ import annotations

import functools
import struct
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_DTYPES = {0: np.float32, 1: np.float16}
_LOCK = threading.Lock()
D_MODEL, HEADS, BLOCKS, HOP, N_FFT = 144, 4, 4, 160, 400


def read_hamapk(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``HAMAPK`` file, in file order, as float32.

    Layout (little-endian): ``b"HAMAPK"``, 2 version bytes, ``u32`` count; per tensor ``u16`` name
    length, the name, ``u8`` dtype (0 float32, 1 float16), ``u8`` rank, ``u32`` × rank shape, ``u64``
    offset and ``u64`` size into the data section, which ends the file."""
    data = Path(path).read_bytes()
    if data[:6] != b"HAMAPK":
        raise ValueError(f"{path} is not a HAMAPK file")
    (count,) = struct.unpack_from("<I", data, 8)
    pos, entries = 12, []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2: pos + 2 + length].decode()
        pos += 2 + length
        dtype, rank = data[pos], data[pos + 1]
        shape = struct.unpack_from(f"<{rank}I", data, pos + 2)
        offset, size = struct.unpack_from("<QQ", data, pos + 2 + 4 * rank)
        pos += 2 + 4 * rank + 16
        entries.append((name, _DTYPES[dtype], shape, offset, size))
    base = len(data) - max(offset + size for *_, offset, size in entries)
    return {name: torch.from_numpy(np.frombuffer(data, dtype, int(np.prod(shape)), base + offset)
                                   .reshape(shape).astype(np.float32))
            for name, dtype, shape, offset, size in entries}


class HamaConformer:
    """hama's CTC phoneme model (module docstring): ``model(wav)`` → log-probs ``[frames, 191]``."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        self.w = weights
        matmuls = [k for k in weights if k.startswith("onnx::MatMul")]  # 6 a block, in order
        convs = [k for k in weights if k.startswith("onnx::Conv")]  # subsampling, then each block's depthwise
        if len(matmuls) != 6 * BLOCKS or len(convs) != 2 + 2 * BLOCKS or weights[convs[0]].shape != (D_MODEL, 80, 3):
            raise ValueError("unexpected hama ASR model layout (speechrl reads hama 1.7.0's asr_waveform.hama)")
        self.subsample = convs[:2]
        self.blocks = [(f"acoustic_model.model.blocks.{i}.", matmuls[6 * i: 6 * i + 6], convs[2 + 2 * i: 4 + 2 * i])
                       for i in range(BLOCKS)]

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if wav.numel() > N_FFT // 2 else "constant"  # < 12.5 ms: nothing to reflect
        x = F.pad(wav[None, None], (N_FFT // 2, N_FFT // 2), mode=mode)
        power = (F.conv1d(x, self.w["stft_real_kernel"], stride=HOP) ** 2
                 + F.conv1d(x, self.w["stft_imag_kernel"], stride=HOP) ** 2)
        return torch.einsum("bft,fm->bmt", power, self.w["mel_fb"]).clamp(min=1e-10).log()

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        w = self.w
        x = F.gelu(F.conv1d(self.log_mel(wav), w[self.subsample[0]], w[self.subsample[1]], stride=2, padding=1))
        x = x.transpose(1, 2)  # [1, frames, 144]
        for block in self.blocks:
            x = self.block(x, *block)
        logits = F.conv1d(x.transpose(1, 2), w["acoustic_model.model.proj.weight"], w["acoustic_model.model.proj.bias"])
        return F.log_softmax(logits[0].T, dim=-1)

    def block(self, x: torch.Tensor, pre: str, matmuls: list[str], depthwise: list[str]) -> torch.Tensor:
        """One Conformer block: ½ FFN, self-attention, convolution, ½ FFN, LayerNorm."""
        w, (f1a, f1b, qkv, out, f2a, f2b), (dw, dw_bias) = self.w, matmuls, depthwise

        def norm(h: torch.Tensor, name: str) -> torch.Tensor:
            return F.layer_norm(h, (D_MODEL,), w[f"{pre}{name}.weight"], w[f"{pre}{name}.bias"])

        def ffn(h: torch.Tensor, name: str, a: str, b: str) -> torch.Tensor:
            h = F.silu(norm(h, f"{name}.norm") @ w[a] + w[f"{pre}{name}.fc1.bias"])
            return h @ w[b] + w[f"{pre}{name}.fc2.bias"]

        x = x + 0.5 * ffn(x, "ffn1", f1a, f1b)
        q, k, v = (norm(x, "attn_norm") @ w[qkv] + w[f"{pre}attn.in_proj_bias"]).split(D_MODEL, -1)
        heads = [h.unflatten(-1, (HEADS, -1)).transpose(1, 2) for h in (q, k, v)]
        x = x + F.scaled_dot_product_attention(*heads).transpose(1, 2).flatten(2) @ w[out] + w[f"{pre}attn.out_proj.bias"]
        h = norm(x, "conv.norm").transpose(1, 2)
        h = F.glu(F.conv1d(h, w[f"{pre}conv.pointwise1.weight"], w[f"{pre}conv.pointwise1.bias"]), dim=1)
        h = F.silu(F.conv1d(h, w[dw], w[dw_bias], padding=w[dw].shape[-1] // 2, groups=D_MODEL))
        x = x + F.conv1d(h, w[f"{pre}conv.pointwise2.weight"], w[f"{pre}conv.pointwise2.bias"]).transpose(1, 2)
        return norm(x + 0.5 * ffn(x, "ffn2", f2a, f2b), "norm")


@functools.lru_cache(maxsize=1)
def hama_conformer() -> HamaConformer:
    """The packaged model, loaded once per process."""
    return HamaConformer(read_hamapk(resources.files("hama.assets").joinpath("asr_waveform.hama")))


def log_probs(wav: np.ndarray) -> np.ndarray:
    """CTC log-probs ``[n // 320 + 1, 191]`` of a 16 kHz mono waveform (clipped to ±1 like hama's
    engine), computed on one thread."""
    x = torch.from_numpy(np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0))
    with _LOCK, torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return hama_conformer()(x).numpy()
        finally:
            torch.set_num_threads(threads)
