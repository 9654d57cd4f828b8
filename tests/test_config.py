"""Typed config: YAML + overrides, strict keys, errors that name the key and the allowed values."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from speechrl import config as C


@dataclass
class Optim:
    lr: float = C.doc("learning rate", 1e-5)
    schedule: Literal["linear", "constant"] = C.doc("lr schedule", "linear")


@dataclass
class Recipe:
    steps: int = C.doc("training steps", 10)
    name: str = C.doc("run name", "x")
    voices: list[str] = C.doc("voices", default_factory=lambda: ["a"])
    warm: bool = C.doc("warm start", False)
    beta: float | None = C.doc("KL weight", None)
    optim: Optim = field(default_factory=Optim)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.001\n")
    cfg = C.load(Recipe, path, ["optim.schedule=constant", "voices=[b, c]", "beta=0.1", "steps=7"])
    assert cfg.steps == 7 and cfg.optim.lr == 0.001 and cfg.optim.schedule == "constant"
    assert cfg.voices == ["b", "c"] and cfg.beta == 0.1 and cfg.warm is False


def test_int_and_exponent_accepted_for_float(tmp_path):
    assert C.load(Recipe, None, ["optim.lr=1"]).optim.lr == 1.0
    assert C.load(Recipe, None, ["optim.lr=1e-5"]).optim.lr == 1e-5  # YAML 1.1 reads 1e-5 as a string
    (tmp_path / "r.yaml").write_text("optim:\n  lr: 3e-4\n")
    assert C.load(Recipe, tmp_path / "r.yaml").optim.lr == 3e-4


@pytest.mark.parametrize("override,needle", [
    ("stepz=3", "unknown config key 'stepz' (did you mean 'steps'?)"),
    ("optim.lrr=3", "unknown config key 'optim.lrr'"),
    ("steps=abc", "steps: expected an integer"),
    ("warm=3", "warm: expected true/false"),
    ("optim.schedule=cosine", "choose one of ['linear', 'constant']"),
    ("voices=3", "voices: expected a list"),
    ("optim=3", "optim: expected a mapping"),
    ("nokey", "must look like key.sub=value"),
])
def test_errors_name_the_key(override, needle):
    with pytest.raises(C.ConfigError) as info:
        C.load(Recipe, None, [override])
    assert needle in str(info.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(C.ConfigError, match=r"allowed keys: \['beta', 'name', 'optim', 'steps', 'voices', 'warm'\]"):
        C.load(Recipe, None, ["zzz=1"])


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [1\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(Recipe, path)
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(Recipe, tmp_path / "missing.yaml")


def test_save_round_trips(tmp_path):
    cfg = C.load(Recipe, None, ["optim.lr=0.5", "voices=[q]"])
    C.save(cfg, tmp_path / "config.yaml")
    assert C.load(Recipe, tmp_path / "config.yaml") == cfg


def test_describe_lists_nested_keys_with_help():
    lines = C.describe(Recipe)
    assert any(line.startswith("optim.lr (float, default 1e-05): learning rate") for line in lines)
