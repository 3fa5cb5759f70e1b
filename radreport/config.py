"""YAML configs checked into frozen dataclasses, with `a.b=c` command-line overrides.

A config is data; the recipe that reads it is code. Loading reports every problem at once
(unknown keys, wrong types, values out of range), each named by its dotted key, so a bad
config fails before any process group or model is started.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """One or more config keys are wrong; the message lists every one of them."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: invalid config\n" + "\n".join(f"  - {p}" for p in problems))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=3e-4", "epochs=1"]` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError("command line", [f"override {item!r} is not of the form key.path=value"])
        key, raw = item.split("=", 1)
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _check_type(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Coerce ints to floats where a float is expected; report anything else that does not fit."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            sub: list[str] = []
            out = _check_type(value, arg, key, sub)
            if not sub:
                return out
        problems.append(f"{key}: expected {tp}, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            problems.append(f"{key}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{key}: expected a list, got {value!r}")
            return value
        (inner, *_) = typing.get_args(tp) or (Any,)
        return tuple(_check_type(v, inner, f"{key}[{i}]", problems) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", problems)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; users write learning rates that way.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        problems.append(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type[T], data: Any, prefix: str, problems: list[str]) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix or '<root>'}: expected a mapping, got {data!r}")
        return None  # type: ignore[return-value]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            problems.append(f"{prefix}{k}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name in data:
            kwargs[name] = _check_type(data[name], hints[name], key, problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _build(hints[name], {}, key + ".", problems)
            else:
                problems.append(f"{key}: required")
    try:
        obj = cls(**kwargs)
    except TypeError:  # a required key is missing: already recorded
        return None  # type: ignore[return-value]
    check = getattr(obj, "check", None)
    if check is not None:  # value checks run even beside unknown keys, so every problem shows at once
        try:
            problems.extend(f"{prefix}{p}" for p in check())
        except TypeError:  # a value of the wrong type, already recorded
            pass
    return obj


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return obj


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Read YAML at `path` (or start empty), apply overrides, check into `cls`."""
    data: dict = {}
    source = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(source, [f"config file not found: {p}"])
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(source, [f"not valid YAML: {e}"]) from None
    data = _merge(data, parse_overrides(list(overrides)))
    return from_dict(cls, data, source)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (tuples as lists) for JSON/YAML output."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
