"""Audio I/O on real files of every odd kind: each bad one gets a typed error naming file and reason."""

import json
import struct

import numpy as np
import pytest
import soundfile as sf

from speechrl.audio import AudioError, RejectLog, audio_files, iter_audio, load_audio, resample, save_audio


def tone(seconds=0.5, sr=16000, freq=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_loads_48k_stereo_as_16k_mono(tmp_path):
    stereo = np.stack([tone(1.0, 48000), tone(1.0, 48000, 440.0)], axis=1)
    sf.write(tmp_path / "a.flac", stereo, 48000)
    wav = load_audio(tmp_path / "a.flac")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert wav.size == 16000
    assert np.all(np.isfinite(wav)) and np.max(np.abs(wav)) <= 1.0


def test_loads_8bit_and_22k(tmp_path):
    sf.write(tmp_path / "u8.wav", tone(0.5, 8000), 8000, subtype="PCM_U8")
    sf.write(tmp_path / "p.wav", tone(0.5, 22050), 22050)
    assert load_audio(tmp_path / "u8.wav").size == 8000
    assert abs(load_audio(tmp_path / "p.wav").size - 8000) <= 1


def test_resample_does_not_clip_full_scale():
    loud = np.sign(tone(0.2, 22050)).astype(np.float32)  # square wave at full scale
    assert np.max(np.abs(resample(loud, 22050))) <= 1.0


def _zero_channel_wav(path):
    fmt = struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16)
    data = b"\x00" * 32
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


BAD = {
    "empty.wav": lambda p: p.write_bytes(b""),
    "text.wav": lambda p: p.write_text("this is not audio"),
    "truncated.wav": lambda p: (sf.write(p, tone(1.0), 16000), p.write_bytes(p.read_bytes()[:30])),
    "nan.wav": lambda p: sf.write(p, np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT"),
    "inf.wav": lambda p: sf.write(p, np.array([0.1, np.inf] * 800, dtype=np.float32), 16000, subtype="FLOAT"),
    "zero_samples.wav": lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000),
    "zero_channels.wav": _zero_channel_wav,
    "tiny.wav": lambda p: sf.write(p, tone(0.01), 16000),
    "too_long.wav": lambda p: sf.write(p, np.zeros(8000 * 601, dtype=np.int16), 8000),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_raises_typed_error_naming_file(tmp_path, name):
    path = tmp_path / name
    BAD[name](path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and info.value.reason


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")


def test_batch_loader_records_rejects_and_goes_on(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, make in BAD.items():
        make(data / name)
    for i in range(3):
        save_audio(data / f"good{i}.wav", tone(0.3 + 0.1 * i))
    rejects = RejectLog(tmp_path / "out")
    loaded = list(iter_audio(audio_files(data), rejects))
    assert sorted(p.name for p, _ in loaded) == ["good0.wav", "good1.wav", "good2.wav"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == sorted(BAD)
    assert all(r["reason"] and r["stage"] == "load" for r in rows)


def test_scan_command_records_rejects_and_processes_the_rest(tmp_path):
    from speechrl.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for name in ("empty.wav", "text.wav", "nan.wav"):
        BAD[name](data / name)
    save_audio(data / "ok.wav", tone(0.5))
    assert main(["audio", "scan", str(data), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == {"files": 4, "loaded": 1, "rejected": 3, "seconds": 0.5, "other_files": {}}
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and all(reasons)
