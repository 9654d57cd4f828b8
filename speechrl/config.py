"""Typed configuration: dataclasses loaded from YAML, overridden from the CLI, strict about keys.

Every config is a (nested) dataclass whose fields carry their documentation, and their constraints, in
:func:`doc`. :func:`load` builds one from a YAML file plus ``key.sub=value`` overrides and checks every
value before any work starts: an unknown key, a value of the wrong type, a number out of its range
(``ge``/``gt``/``le``), a path that does not exist (``path``), or what a config class's own
``validate()`` refuses (names that must be registered, settings that must agree) is a one-line
:class:`ConfigError` that names the key and what is allowed.

Checks run where a config is loaded (:func:`from_dict`, so ``speechrl run``, ``demo``, ``corpus build``),
not when code builds a dataclass directly (tests and trainers construct configs freely).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from speechrl.runlog import atomic_write_text, redact_secrets

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist, or a value that does not fit the key's type."""


PathKind = Literal["exists", "model"]


def doc(help: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING, *,
        ge: float | None = None, gt: float | None = None, le: float | None = None, path: PathKind | None = None,
        affects_results: bool = True):
    """A dataclass field with its documentation and constraints attached (shown by ``--help-config``,
    checked by :func:`from_dict`).

    ge / gt / le: bounds of a number (of every item of a list, every value of a mapping; None passes).
    path: ``"exists"``: a non-empty value must name an existing file or folder; ``"model"``: a model name:
        an offline name or hub id (``org/name``) passes, a value that looks like a path (starts with
        ``/ . ~``, or has a backslash or more than one ``/``) must exist (:func:`check_model_name`).
    affects_results: False only for a key that cannot change any result a run folder holds (how often a
        checkpoint is written, how many worker processes) or that only chooses which systems a run trains
        or evaluates: a rerun into a finished folder may change it (:mod:`speechrl.runfolder`).
    """
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "path": path, "affects_results": affects_results}
    meta = {k: v for k, v in meta.items() if v is not None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` and :func:`check` it: unknown keys, wrong types and values out
    of their constraints raise :class:`ConfigError`."""
    obj = _build(cls, data, prefix)
    check(obj, prefix)
    return obj


def _build(cls: type[T], data: dict[str, Any], prefix: str = "", base: Any = None) -> T:
    """``cls`` from ``data``; the keys ``data`` leaves out keep ``base``'s values (the field's own default
    when it is nested: a block declared ``default_factory=lambda: SFTConfig(lr=3e-4, ...)`` keeps its
    lr 3e-4 when a recipe sets only ``max_steps``, not SFTConfig's class default)."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; allowed keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict) and dataclasses.is_dataclass(default):
            kwargs[name] = _build(hints[name], value, f"{prefix}{name}.", default)
        else:
            kwargs[name] = _coerce(value, hints[name], prefix + name)
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field left out
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def looks_like_path(value: str) -> bool:
    """A model name that can only be a local path: starts with ``/``, ``.`` or ``~``, or holds a backslash
    or more than one ``/`` (a hub id is ``name`` or ``org/name``)."""
    return value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1


def check_model_name(key: str, value: str) -> None:
    """A model name (offline name, hub id or folder) that looks like a path must exist: a missing folder
    is named as such here, not later as an invalid hub id."""
    if value and looks_like_path(value) and not Path(value).expanduser().exists():
        raise ConfigError(f"{key}: {value!r} looks like a local path but does not exist (give an existing "
                          "folder, an offline name or a hub id org/name)")


def _check_value(key: str, value: Any, meta: Any) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_value(f"{key}[{i}]", v, meta)
        return
    if isinstance(value, dict) and not dataclasses.is_dataclass(value):
        for k, v in value.items():
            _check_value(f"{key}.{k}", v, meta)
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for bound, ok, word in (("ge", lambda b: value >= b, ">="), ("gt", lambda b: value > b, ">"),
                                ("le", lambda b: value <= b, "<=")):
            if bound in meta and not ok(meta[bound]):
                raise ConfigError(f"{key}: {value!r} is out of range; must be {word} {meta[bound]!r}")
    if isinstance(value, (str, Path)) and meta.get("path") and str(value):
        if meta["path"] == "model":
            check_model_name(key, str(value))
        elif not Path(value).expanduser().exists():
            raise ConfigError(f"{key}: {str(value)!r} does not exist")


def check(obj: Any, prefix: str = "") -> None:
    """Check every field of config dataclass ``obj`` (nested ones too, defaults included) against the
    constraints its :func:`doc` declares, then its ``validate()`` method when it has one (cross-field and
    registry checks; it raises :class:`ConfigError` whose message starts with the field's own key, which
    is prefixed here). Raises the first problem as a one-line :class:`ConfigError`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check(value, f"{prefix}{f.name}.")
        else:
            _check_value(prefix + f.name, value, f.metadata)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{prefix}{err}") from None


def to_dict(obj: Any) -> Any:
    """Plain YAML-safe data (paths as strings) from a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` → ``(["a", "b"], 3)``; the value is parsed as YAML (so ``true``, ``[1, 2]`` work)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def merge_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` applied (intermediate maps created)."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {raw[err.start]:#04x}); save the file "
                          "as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
         base: dict[str, Any] | None = None) -> T:
    """Config ``cls`` from ``base`` < YAML ``path`` < CLI ``overrides`` (later wins)."""
    data = dict(base or {})
    if path is not None:
        data.update(read_yaml(path))
    return from_dict(cls, merge_overrides(data, overrides))


def save(obj: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, with credentials redacted
    (:func:`speechrl.runlog.redact_secrets`: ``api_key``, ``hf_token``, ``*secret*`` … fields)."""
    return atomic_write_text(path, yaml.safe_dump(redact_secrets(to_dict(obj)), sort_keys=False))


def _constraint(meta: Any) -> str:
    bounds = [f"{word} {meta[k]!r}" for k, word in (("ge", ">="), ("gt", ">"), ("le", "<=")) if k in meta]
    path = {"exists": "an existing path", "model": "a model name or existing folder"}.get(meta.get("path"))
    return "".join(f", {c}" for c in [*bounds, path] if c)


def describe(cls_or_obj: Any, prefix: str = "", defaults: Any = None) -> list[str]:
    """One line per field for ``--help-config``: ``key (type, range, default D): help`` for a class; for a
    config object (a resolved recipe) ``key = V (type, range): help``, with ``default D`` beside the
    value where they differ (D: the class's default, as its parent class sets it)."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    obj = None if isinstance(cls_or_obj, type) else cls_or_obj
    if defaults is None:
        try:
            defaults = cls()
        except TypeError:  # a required field: per-field defaults only
            defaults = None
    lines = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        default = getattr(defaults, f.name, default)
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(getattr(obj, f.name) if obj is not None else tp, prefix + f.name + ".", default))
            continue
        kind, help = _type_name(tp) + _constraint(f.metadata), f.metadata.get("help", "")
        if obj is None:
            lines.append(f"{prefix}{f.name} ({kind}, default {to_dict(default)!r}): {help}")
            continue
        value = to_dict(getattr(obj, f.name))
        differs = "" if value == to_dict(default) else f", default {to_dict(default)!r}"
        lines.append(f"{prefix}{f.name} = {value!r} ({kind}{differs}): {help}")
    return lines
