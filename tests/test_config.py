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


# --- values checked when a config is loaded (issue 25, item 2) --------------------------------------


@dataclass
class Bounded:
    steps: int = C.doc("steps", 10, ge=0)
    lr: float = C.doc("learning rate", 1e-4, gt=0)
    p: float = C.doc("a probability", 0.5, ge=0, le=1)
    speeds: list[float] = C.doc("speeds", default_factory=lambda: [1.0], gt=0)
    lm: str = C.doc("model", "smollm2-135m", path="model")
    data: str = C.doc("a file", "", path="exists")
    low: int = C.doc("low", 1)
    high: int = C.doc("high", 2)

    def validate(self) -> None:
        if self.low >= self.high:
            raise C.ConfigError(f"low: {self.low} must be below high {self.high}")


@dataclass
class Outer:
    inner: Bounded = field(default_factory=Bounded)


@pytest.mark.parametrize("override, needle", [
    ("inner.steps=-5", "inner.steps: -5 is out of range; must be >= 0"),
    ("inner.lr=0", "inner.lr: 0.0 is out of range; must be > 0"),
    ("inner.p=1.5", "inner.p: 1.5 is out of range; must be <= 1"),
    ("inner.speeds=[1.0, -0.5]", "inner.speeds[1]: -0.5 is out of range; must be > 0"),
    ("inner.lm=/nonexistent/folder", "inner.lm: '/nonexistent/folder' looks like a local path but does not exist"),
    ("inner.lm=./no/such/model", "inner.lm: './no/such/model' looks like a local path"),
    ("inner.data=/nonexistent/manifest.jsonl", "inner.data: '/nonexistent/manifest.jsonl' does not exist"),
    ("inner.low=5", "inner.low: 5 must be below high 2"),  # validate() hook, its key prefixed
])
def test_values_out_of_their_constraints_are_config_errors(override, needle):
    with pytest.raises(C.ConfigError) as info:
        C.load(Outer, None, [override])
    assert needle in str(info.value)


def test_values_inside_their_constraints_pass(tmp_path):
    (tmp_path / "m.jsonl").write_text("")
    cfg = C.load(Outer, None, ["inner.steps=0", "inner.p=1", "inner.lm=HuggingFaceTB/SmolLM2-135M",
                               f"inner.data={tmp_path / 'm.jsonl'}", f"inner.lm={tmp_path}"])
    assert cfg.inner.steps == 0 and cfg.inner.lm == str(tmp_path)
    assert C.load(Outer, None, ["inner.lm=openai/whisper-small"]).inner.lm == "openai/whisper-small"  # a hub id


def test_defaults_are_checked_too():
    @dataclass
    class BadDefault:
        steps: int = C.doc("steps", -1, ge=0)

    with pytest.raises(C.ConfigError, match="steps: -1 is out of range"):
        C.load(BadDefault)


def test_help_config_shows_values_beside_their_defaults():
    lines = C.describe(C.load(Outer, None, ["inner.steps=3"]))
    assert "inner.steps = 3 (int, >= 0, default 10): steps" in lines
    assert "inner.lr = 0.0001 (float, > 0): learning rate" in lines  # unchanged: no default shown
    assert "inner.lm (str, a model name or existing folder, default 'smollm2-135m'): model" in C.describe(Outer)


def test_a_nested_block_keeps_its_declared_defaults_for_the_keys_a_recipe_leaves_out():
    """A block declared with default_factory=lambda: SFTConfig(lr=3e-4, ...) keeps lr 3e-4 when a recipe
    sets only max_steps (it used to fall back to SFTConfig's class default: the demo's unit LM pretrained
    at lr 1e-4 on 40-token chunks instead of the recipe's 3e-4 and 128)."""
    from speechrl.pipelines import load_recipe

    declared = load_recipe("align_slm", {}).pretrain
    partial = load_recipe("align_slm", {"pretrain": {"max_steps": 7}}).pretrain
    assert partial.max_steps == 7
    assert {k: v for k, v in vars(partial).items() if k != "max_steps"} == \
           {k: v for k, v in vars(declared).items() if k != "max_steps"}
    assert (partial.lr, partial.max_tokens) == (3e-4, 128)
    overridden = load_recipe("align_slm", {"dpo": {"lora": {"r": 4}}}, ["pretrain.lr=0.01"])
    assert overridden.pretrain.lr == 0.01 and overridden.pretrain.max_tokens == 128
    assert (overridden.dpo.lora.r, overridden.dpo.lora.alpha, overridden.dpo.lr) == (4, 8, 1e-4)
