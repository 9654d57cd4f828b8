"""Bad input, one case at a time: each gets a typed error naming the file and the reason, or is
skipped and recorded — and nothing else is lost.

Sections: audio files · batch scans · transcripts and text files · config · rewards and groups ·
checkpoints on a full disk · secrets and safe loading. Every case runs on real files in ``tmp_path``;
the only stand-in is the full disk (``save_file`` made to raise ENOSPC, as no test machine can be
made to run out of space on cue).
"""

import errno
import json
import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speechrl import checkpoint
from speechrl import config as C
from speechrl.audio import MAX_SECONDS, AudioError, RejectLog, audio_files, iter_audio, load_audio
from speechrl.losses.grpo import group_advantages, zero_variance_groups
from speechrl.rewards import REWARDS, WeightedReward, accuracy_cer, accuracy_wer, tanh_wer
from speechrl.runlog import MetricsLogger, read_jsonl, read_metrics, write_json
from speechrl.text import normalize, sentence_wer, wer


def tone(seconds=0.5, sr=16000, freq=220.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --- audio files -------------------------------------------------------------------------------


def _truncated_mid_data(p):
    sf.write(p, tone(1.0), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # a cut-off copy: the header still declares 1 s


def _hours_long_wav(p, hours=2, sr=8000):
    """A valid 8-bit WAV of ``hours`` of audio, written sparse (no disk blocks, no time)."""
    n = hours * 3600 * sr
    fmt = struct.pack("<HHIIHH", 1, 1, sr, sr, 1, 8)
    header = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
              + b"data" + struct.pack("<I", n))
    with open(p, "wb") as f:
        f.write(header)
        f.truncate(len(header) + n)


BAD_AUDIO = {  # file name → (how to make it, what the reason must say)
    "empty.wav": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "header_only.wav": (lambda p: (sf.write(p, tone(1.0), 16000), p.write_bytes(p.read_bytes()[:30])),
                        "not a readable audio file"),
    "truncated.wav": (_truncated_mid_data, "truncated: the header declares 16000 frames"),
    "text.wav": (lambda p: p.write_text("this is a transcript, not audio\n"), "not a readable audio file"),
    "garbage.flac": (lambda p: p.write_bytes(bytes(range(256)) * 40), "not a readable audio file"),
    "nan.wav": (lambda p: sf.write(p, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT"), "NaN"),
    "inf.wav": (lambda p: sf.write(p, np.array([0.1, -np.inf] * 800, np.float32), 16000, subtype="FLOAT"),
                "NaN or infinite"),
    "no_samples.wav": (lambda p: sf.write(p, np.zeros(0, np.float32), 16000), "no samples"),
    "too_short.wav": (lambda p: sf.write(p, tone(0.01), 16000), "too short"),
    "hours_long.wav": (_hours_long_wav, f"too long: 7200.0 s > {MAX_SECONDS} s"),
}


@pytest.mark.parametrize("name", sorted(BAD_AUDIO))
def test_bad_audio_file_gets_a_typed_error_with_file_and_reason(tmp_path, name):
    make, reason = BAD_AUDIO[name]
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
    assert reason in info.value.reason


def test_hours_long_file_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    _hours_long_wav(path)
    assert path.stat().st_size > 50e6 and path.stat().st_blocks * 512 < 1e6  # sparse: never read

    def no_decoding(*args, **kwargs):
        raise AssertionError("the samples of an over-long file must not be decoded")

    monkeypatch.setattr(sf, "read", no_decoding)
    with pytest.raises(AudioError, match="too long"):
        load_audio(path)
    sf.write(tmp_path / "two.wav", tone(2.0), 16000)
    with pytest.raises(AudioError, match=r"too long: 2\.0 s > 1\.5 s"):  # the limit is an argument
        load_audio(tmp_path / "two.wav", max_seconds=1.5)


def test_directory_named_like_audio(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="a directory, not a file"):
        load_audio(tmp_path / "folder.wav")


def _wav_header(path, channels=1, rate=16000, frames=800):
    """A PCM_16 WAV whose fmt chunk says ``channels`` and ``rate`` (0 allowed), with ``frames`` samples."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * max(channels, 1), 16)
    data = b"\x01\x00" * frames * max(channels, 1)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: _wav_header(p, rate=0), "sample rate 0 in the header"),
    (lambda p: _wav_header(p, channels=0), "zero channels in the header"),
    (lambda p: p.mkdir(), "a directory, not a file"),
    (lambda p: p.symlink_to(p.parent / "gone.wav"), "dangling symbolic link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
])
def test_reasons_are_plain_where_libsndfile_is_cryptic(tmp_path, make, reason):
    """Bug fixed: libsndfile said "Error opening b'<path>': " (nothing more) for an empty file and "SF_INFO
    struct incomplete" for a sample rate of 0; the path came back as a bytes literal inside the reason."""
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert reason in info.value.reason and str(path) not in info.value.reason and "b'" not in info.value.reason


def test_unreadable_reason_names_the_path_once_as_text(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert info.value.reason == "not a readable audio file (Format not recognised.)"
    assert str(info.value).count(str(path)) == 1


def _raw_pcm(path, seconds=0.5, sr=8000):
    (tone(seconds, sr) * 32767).astype("<i2").tofile(path)


def test_headerless_raw_loads_at_the_given_sample_rate(tmp_path):
    _raw_pcm(tmp_path / "a.raw", 0.5, 8000)
    _raw_pcm(tmp_path / "b.pcm", 0.5, 16000)
    with pytest.raises(AudioError, match="headerless raw audio: its sample rate is unknown"):
        load_audio(tmp_path / "a.raw")
    wav = load_audio(tmp_path / "a.raw", raw_sample_rate=8000)
    assert wav.shape == (8000,)  # 0.5 s at 8 kHz resampled to 16 kHz
    np.testing.assert_allclose(wav[100:-100], tone(0.5)[100:-100], atol=2e-3)
    assert load_audio(tmp_path / "b.pcm", raw_sample_rate=16000).shape == (8000,)
    assert load_audio(tmp_path / "b.pcm", raw_sample_rate=16000, sr=8000).shape == (4000,)


def test_8bit_pcm_loads_with_its_level(tmp_path):
    sf.write(tmp_path / "u8.wav", tone(0.5, 16000, amp=0.5), 16000, subtype="PCM_U8")
    wav = load_audio(tmp_path / "u8.wav")
    assert wav.dtype == np.float32 and wav.shape == (8000,)
    assert 0.45 < np.max(np.abs(wav)) <= 0.5 + 1 / 128  # 8-bit quantisation, no rescaling


def test_48k_stereo_is_resampled_to_16k_mono(tmp_path):
    stereo = np.stack([tone(1.0, 48000, 220.0), tone(1.0, 48000, 220.0)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 48000)
    wav = load_audio(tmp_path / "st.wav")
    assert wav.shape == (16000,) and wav.dtype == np.float32
    np.testing.assert_allclose(wav[100:-100], tone(1.0)[100:-100], atol=2e-3)  # same tone, 16 kHz


def test_float_file_beyond_full_scale_is_rescaled_not_clipped(tmp_path):
    loud = tone(0.5, amp=4.0)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    wav = load_audio(tmp_path / "loud.wav")
    assert np.max(np.abs(wav)) == pytest.approx(1.0)
    np.testing.assert_allclose(wav, loud / 4.0, atol=1e-6)  # shape kept: scaled, not clipped


def test_file_name_that_is_not_utf8_loads(tmp_path):
    """Bug fixed: soundfile could not open such a name, so a good file was rejected as unreadable."""
    path = tmp_path / os.fsdecode(b"caf\xe9.wav")  # Latin-1 name on a UTF-8 system
    sf.write(os.fsencode(path), tone(0.5), 16000)
    assert load_audio(path).shape == (8000,)


# --- batch scans ---------------------------------------------------------------------------------


def _mixed_folder(root):
    root.mkdir()
    for name, (make, _) in BAD_AUDIO.items():
        make(root / name)
    BAD_AUDIO["text.wav"][0](root / os.fsdecode(b"bad\xff.wav"))  # a bad file with a non-UTF-8 name
    sf.write(root / "good.wav", tone(0.5), 16000)
    sf.write(root / "good48k.flac", tone(0.5, 48000), 48000)
    return root


def test_batch_scan_records_every_reject_and_loses_nothing(tmp_path):
    files = audio_files(_mixed_folder(tmp_path / "data"))
    rejects = RejectLog(tmp_path / "out")
    loaded = [p.name for p, _ in iter_audio(files, rejects)]
    assert sorted(loaded) == ["good.wav", "good48k.flac"]
    # bug fixed: a non-UTF-8 file name used to crash the scan while writing rejected.jsonl
    rows = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert len(rows) == len(rejects) == len(files) - 2 == len(BAD_AUDIO) + 1
    assert all(r["reason"] and r["stage"] == "load" for r in rows)
    assert any(r["path"].endswith("bad\\xff.wav") for r in rows)


def test_scan_command_counts_add_up(tmp_path, capsys):
    from speechrl.cli import main

    _mixed_folder(tmp_path / "data")
    assert main(["audio", "scan", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["loaded"] == 2 and summary["rejected"] == len(BAD_AUDIO) + 1
    assert summary["loaded"] + summary["rejected"] == summary["files"]
    assert len(read_jsonl(tmp_path / "out" / "rejected.jsonl")) == summary["rejected"]


def _odd_entries_folder(root):
    """Every kind of entry a folder of "audio" holds in practice."""
    root.mkdir()
    sf.write(root / "good.wav", tone(0.5), 16000)
    (root / "sub").mkdir()
    sf.write(root / "sub" / "nested.flac", tone(0.25), 16000)
    (root / "dangling.wav").symlink_to(root / "deleted.wav")
    (root / "dangling_noext").symlink_to(root / "deleted")
    (root / "folder.wav").mkdir()
    sf.write(root / "folder.wav" / "inside.wav", tone(0.5), 16000)  # not walked: the folder is rejected
    (tmp := root / "clip.raw").write_bytes(b"")
    _raw_pcm(tmp, 0.5, 8000)
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("a transcript")
    (root / "README").write_text("about the data")
    (root / "linked").symlink_to(root / "sub")  # a second way into sub/: walked once
    return root


def test_scan_command_accounts_for_every_entry(tmp_path, capsys):
    """Bug fixed: a dangling link and a folder named *.wav were neither counted nor listed, .raw files
    were invisible, and the reason held the path again as a bytes literal."""
    from speechrl.cli import main

    data = _odd_entries_folder(tmp_path / "data")
    assert main(["audio", "scan", str(data), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {r["path"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert rows == {
        str(data / "clip.raw"): "headerless raw audio: its sample rate is unknown (give it: --sample-rate, "
                                "raw_sample_rate)",
        str(data / "dangling.wav"): f"dangling symbolic link (to {data / 'deleted.wav'})",
        str(data / "dangling_noext"): f"dangling symbolic link (to {data / 'deleted'})",
        str(data / "empty.wav"): "empty file (0 bytes)",
        str(data / "folder.wav"): "a directory, not a file",
    }
    assert summary == {"files": 7, "loaded": 2, "rejected": 5, "seconds": 0.75,
                       "other_files": {"": 1, ".txt": 1, "(folder already scanned)": 1}}
    err = capsys.readouterr().err
    for path, reason in rows.items():
        assert err.count(path) == 1 and f"{path}: {reason}" in err  # each bad entry once, as text

    assert main(["audio", "scan", str(data), "--out", str(tmp_path / "out"), "--sample-rate", "8000"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["loaded"] == 3 and summary["rejected"] == 4 and summary["seconds"] == 1.25
    assert str(data / "clip.raw") not in (tmp_path / "out" / "rejected.jsonl").read_text()


def test_scan_help_names_every_extension_it_loads():
    from speechrl.audio import AUDIO_SUFFIXES, RAW_SUFFIXES
    from speechrl.cli import SCAN_HELP

    import re

    assert set(AUDIO_SUFFIXES | RAW_SUFFIXES) <= set(re.findall(r"\.[a-z0-9]+\b", SCAN_HELP))


def test_scan_command_refuses_a_missing_folder(tmp_path, capsys):
    """Bug fixed: a misspelled folder gave {"files": 0} and exit 0."""
    from speechrl.cli import main

    for folder, why in ((tmp_path / "no_such_dir", "no such folder"), (tmp_path / "f.txt", "not a folder")):
        (tmp_path / "f.txt").write_text("x")
        with pytest.raises(SystemExit) as info:
            main(["audio", "scan", str(folder), "--out", str(tmp_path / "out")])
        assert info.value.code == 2 and f"{folder}: {why}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "summary.json").exists()


# --- transcripts and text files ------------------------------------------------------------------

BLANKS = ["", "   ", "\n\t", "…!?", "\u200b\u00ad"]


@pytest.mark.parametrize("blank", BLANKS)
def test_blank_transcripts_have_defined_error_rates_and_rewards(blank):
    """WER against an empty reference (speechrl.text): every hypothesis word is an insertion over a
    denominator of 1, so ("", "") → 0 and ("", "oh yes") → 2; a blank hypothesis for a real
    reference deletes every word → 1."""
    assert normalize(blank) == ""
    assert sentence_wer(blank, "") == 0.0
    assert sentence_wer(blank, "oh yes") == 2.0
    assert sentence_wer("hello world", blank) == 1.0
    assert wer(["a b", blank], ["a b", "x"]) == 0.5  # corpus level: 1 insertion / 2 reference words
    hyps, refs = ["", "oh yes", blank], [blank, blank, "hello world"]
    assert accuracy_wer(None, hyps, reference=refs) == [1.0, -1.0, 0.0]
    assert tanh_wer(None, hyps, reference=refs) == pytest.approx([1.0, 1 - math.tanh(6.0), 1 - math.tanh(3.0)])
    assert accuracy_cer(None, hyps, reference=refs)[0] == 1.0
    for name, fn in REWARDS.items():
        if name == "embedding_similarity":
            continue  # loads MiniLM; covered in tests/test_properties.py
        low, high = fn.value_range
        values = fn(None, hyps, reference=refs, keywords=[[], ["hello"], [blank]], language=["en"] * 3,
                    seconds=[1.0, 2.0, 1.5], group=[0, 0, 0], speech_tokens=[[], [1], [1, 2]])
        if name == "keyword_score":  # keywords [] and [blank]: nothing to judge
            assert values[0] is None and values[2] is None
            values = values[1:2]
        assert all(math.isfinite(v) and low <= v <= high for v in values), name


def test_long_digit_run_does_not_crash_normalisation():
    """Bug fixed: int() refuses > 4300 digits, so a decoding loop of digits crashed the reward."""
    loop = "1" * 5000
    assert normalize(loop) == loop
    assert normalize(f"{loop}th {loop}.5 {loop}%") == f"{loop}th {loop} point five {loop} percent"
    assert accuracy_wer(None, [loop], reference=["one"]) == [0.0]


def test_text_given_as_bytes_is_a_type_error():
    with pytest.raises(TypeError, match="expected str, got bytes"):
        normalize("caf\xe9".encode("latin-1"))
    with pytest.raises(TypeError, match="reference 0 is bytes"):
        wer([b"abc"], ["abc"])


def test_jsonl_file_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not UTF-8 \(byte 0xe9"):
        read_jsonl(path)


def test_jsonl_bad_line_named_and_cut_off_last_line_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: not a JSON line"):
        read_jsonl(path)
    # a writer killed mid-line: the fragment is skipped, and the next logger starts a clean line
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1}]
    MetricsLogger(tmp_path, tensorboard=False).log({"loss": 0.5}, step=2)
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_manifest_line_that_is_not_utf8_names_the_file(tmp_path):
    from speechrl.corpus.build import load_manifest

    (tmp_path / "manifest.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9", "audio": "a.wav"}\n')
    with pytest.raises(ValueError) as info:  # today: a bare UnicodeDecodeError
        load_manifest(tmp_path)
    assert "manifest.jsonl" in str(info.value)


# --- config --------------------------------------------------------------------------------------


def _grpo_config():
    from speechrl.trainers.grpo import SpeechGRPOConfig

    return SpeechGRPOConfig


@pytest.mark.parametrize("override, needle", [
    ("grpo_size=4", "unknown config key 'grpo_size' (did you mean 'group_size'?)"),
    ("lora.rr=4", "unknown config key 'lora.rr' (did you mean 'lora.r'?)"),
    ("group_size=eight", "group_size: expected an integer, got 'eight'"),
    ("dynamic_sampling=maybe", "dynamic_sampling: expected true/false"),
    ("loss_type=ppo", "loss_type: 'ppo' is not allowed; choose one of ['grpo', 'dapo', 'bnpo', 'dr_grpo']"),
    ("rewards=[bleu]", "rewards: expected a mapping"),
])
def test_config_typo_or_wrong_type_names_the_key(override, needle):
    with pytest.raises(C.ConfigError) as info:
        C.load(_grpo_config(), None, [override])
    assert needle in str(info.value)


def test_config_file_that_is_not_utf8(tmp_path):
    """Bug fixed: a Latin-1 YAML file raised a bare UnicodeDecodeError instead of a ConfigError."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"group_size: 4\n# caf\xe9\n")
    with pytest.raises(C.ConfigError, match=rf"{path}:2: not UTF-8"):
        C.load(_grpo_config(), path)


# --- rewards and groups --------------------------------------------------------------------------


def test_nan_inf_rewards_are_masked_and_counted_none_is_not_applicable():
    def flaky(prompts, completions, **kw):  # a judge that sometimes answers garbage
        return [{"ok": 0.5, "nan": math.nan, "inf": -math.inf, "none": None}[c] for c in completions]

    combined = WeightedReward({"flaky": (flaky, 1.0), "wer": (accuracy_wer, 2.0)})
    total = combined(None, ["ok", "nan", "inf", "none"], reference=["ok", "nan", "inf", "none"])
    assert total[0] == 0.5 + 2.0 and all(math.isnan(t) for t in total[1:3])  # never a partial sum
    assert total[3] == 2.0  # None: this reward does not apply here; the others' terms stand
    assert combined.last_invalid == [False, True, True, False] and combined.invalid_total == 2
    metrics = combined.metrics()
    assert metrics["rewards/invalid_count"] == 2.0 and metrics["rewards/total_mean"] == 2.25
    assert metrics["rewards/wer_mean"] == 1.0  # the other reward's values are all kept
    assert metrics["rewards/flaky_not_applicable"] == 1.0
    combined(None, ["nan", "ok"], reference=["nan", "ok"])
    assert combined.invalid_total == 3  # counted over calls


def test_zero_variance_groups_are_flagged_and_give_zero_finite_advantages():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert zero_variance_groups(rewards, 4).tolist() == [True, False, True]
    for scale in ("std", "none"):
        adv = group_advantages(rewards, 4, scale=scale)
        assert torch.isfinite(adv).all() and adv[:4].abs().max() == 0 and adv[8:].abs().max() == 0
        assert adv[4:8].abs().min() > 0


@pytest.mark.parametrize("columns, needle", [
    ({}, "required positional argument: 'reference'"),
    ({"reference": ["a"]}, "column 'reference' has 1 entries for 2 completions"),
    ({"reference": "a b"}, "must be a list with one entry per sample"),
])
def test_reward_with_missing_or_ragged_column(columns, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        accuracy_wer(None, ["a", "b"], **columns)


# --- checkpoints on a full disk ------------------------------------------------------------------


def _trained(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


def _disk_full_on(monkeypatch, filename):
    real = checkpoint.save_file

    def save_file(tensors, path, *args, **kwargs):
        if os.path.basename(path) == filename:
            with open(path, "wb") as f:
                f.write(b"half a file")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)


@pytest.mark.parametrize("failing_file", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failing_file):
    model, opt = _trained()
    checkpoint.save(tmp_path, 10, model, opt, state={"round": 1})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    opt.step()  # the model moves on, then the disk fills while writing step 20
    _disk_full_on(monkeypatch, failing_file)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.save(tmp_path, 20, model, opt, state={"round": 2})
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "step-0000020: could not write the checkpoint" in str(info.value)
    assert "step-0000010" in str(info.value)  # says which checkpoint is still good
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000010"]  # no temp left
    fresh, fresh_opt = _trained(seed=1)
    restored = checkpoint.load(checkpoint.latest(tmp_path), fresh, fresh_opt)
    assert restored == {"step": 10, "state": {"round": 1}}
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_full_disk_while_saving_best_weights_keeps_the_old_file(tmp_path, monkeypatch):
    model, _ = _trained()
    best = checkpoint.save_weights(tmp_path / "best" / "model.safetensors", model)
    before = best.read_bytes()
    _disk_full_on(monkeypatch, ".model.safetensors.tmp")
    with pytest.raises(checkpoint.CheckpointError, match="best/model.safetensors: could not write"):
        checkpoint.save_weights(best, _trained(seed=2)[0])
    assert best.read_bytes() == before and sorted(os.listdir(best.parent)) == ["model.safetensors"]


def test_temp_folder_of_a_killed_save_is_ignored_then_removed(tmp_path):
    model, opt = _trained()
    checkpoint.save(tmp_path, 2, model, opt)
    stale = tmp_path / "checkpoints" / ".step-0000004.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert checkpoint.latest(tmp_path).name == "step-0000002"
    checkpoint.save(tmp_path, 6, model, opt)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000002", "step-0000006"]


def test_damaged_checkpoint_file_names_itself(tmp_path):
    model, opt = _trained()
    ckpt = checkpoint.save(tmp_path, 1, model, opt)
    (ckpt / "optimizer.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(checkpoint.CheckpointError, match="optimizer.safetensors: not a readable safetensors"):
        checkpoint.load(ckpt, model, opt)


# --- secrets and safe loading --------------------------------------------------------------------


def test_saved_config_and_summaries_never_hold_a_secret(tmp_path):
    from dataclasses import dataclass, field

    @dataclass
    class Judge:
        api_key: str = "sk-live-123"
        api_key_env: str = "OPENAI_API_KEY"  # the variable's name, not its value: kept
        hf_token: str = "hf_abc"
        client_secret: str = "s3"
        pad_token: str = "<pad>"
        max_new_tokens: int = 8

    @dataclass
    class Run:
        judge: Judge = field(default_factory=Judge)
        token: str = ""  # empty: nothing to hide

    saved = yaml.safe_load(C.save(Run(), tmp_path / "config.yaml").read_text())
    assert saved == {"judge": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY",
                               "hf_token": "<redacted>", "client_secret": "<redacted>",
                               "pad_token": "<pad>", "max_new_tokens": 8}, "token": ""}
    write_json(tmp_path / "summary.json", {"config": C.to_dict(Run()), "steps": 3})
    text = (tmp_path / "summary.json").read_text()
    assert "sk-live-123" not in text and "hf_abc" not in text and '"steps": 3' in text


def test_models_load_from_safetensors_without_remote_code(monkeypatch):
    """The loaders in speechrl.models.hub and the MiniLM reward ask for safetensors and no remote
    code (the loaders are stubbed: only the arguments they are called with are checked)."""
    import sentence_transformers
    import transformers

    from speechrl.models import hub
    from speechrl.rewards import embedding

    calls = {}
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kw: calls.setdefault("lm", kw))
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer",
                        lambda path, **kw: calls.setdefault("st", kw))
    monkeypatch.setattr(embedding, "_ENCODERS", {})
    hub.load_causal_lm("some/model")
    embedding.load_sentence_encoder("some/encoder")
    assert calls["lm"]["use_safetensors"] is True and calls["lm"]["trust_remote_code"] is False
    assert calls["st"]["model_kwargs"]["use_safetensors"] is True and calls["st"]["trust_remote_code"] is False
