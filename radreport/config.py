"""YAML configs checked into frozen dataclasses, with `a.b=c` command-line overrides.

A config is data; the recipe that reads it is code. Loading reports every problem at once
(unknown keys, wrong types, values out of range), each named by its dotted key, so a bad
config fails before any process group or model is started.

A number's range is declared with its field, in the annotated-types vocabulary that pydantic reads too
(`lr: Annotated[float, Gt(0)]`, or an alias below), and `range_problems` checks every such field: one
rule, one message form ("must be >= 1", "must be in (0, 1]") for every config, the generation contract
and the service's request schema. A dataclass's own `check()` adds only what involves several fields.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import re
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt

from radreport.errors import InputError

T = TypeVar("T")
# A number written as text (YAML 1.1 leaves `1e-4` a string); not `nan`/`inf`, which are refused.
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Ge(0), Lt(1)]
"""A share in [0, 1): dropout, warm-up ratio."""


class ConfigError(InputError):
    """One or more config keys are wrong; the message lists every one of them."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
        else:
            super().__init__(f"{source}: {len(problems)} problems\n" + "\n".join(f"  - {p}" for p in problems))


class DuplicateKey(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (PyYAML keeps the last one without a word:
    `epochs: 3` ... `epochs: 1` would train 1 epoch). A `<<:` merge's keys may be overridden, as YAML says."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it itself
            if key in seen:
                raise DuplicateKey(f"line {key_node.start_mark.line + 1}: {key!r} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=UniqueKeyLoader)


def _bounds(tp: Any) -> list:
    """The Ge/Gt/Le/Lt of an annotation, also inside `X | None` and grouped ones (annotated_types.Interval)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [b for arg in typing.get_args(tp) for b in _bounds(arg)]
    if typing.get_origin(tp) is not Annotated:
        return []
    out = []
    for m in tp.__metadata__:
        out += [g for g in m] if isinstance(m, GroupedMetadata) else [m]
    return [b for b in out if isinstance(b, (Ge, Gt, Le, Lt))]


def _number(x: float) -> str:
    """2**63 - 1 reads better than 9223372036854775807."""
    for k in (31, 32, 63, 64):
        if x in (2**k, 2**k - 1):
            return f"2**{k}" if x == 2**k else f"2**{k} - 1"
    return str(x)


_COMPARE = {Ge: (">=", operator.ge), Gt: (">", operator.gt), Le: ("<=", operator.le), Lt: ("<", operator.lt)}


def _limit(b) -> float:
    return getattr(b, type(b).__name__.lower())  # Ge(1).ge, Lt(1).lt, ...


def _describe(bounds: list) -> str:
    low = next((b for b in bounds if isinstance(b, (Ge, Gt))), None)
    high = next((b for b in bounds if isinstance(b, (Le, Lt))), None)
    if low is not None and high is not None:
        left, right = "[" if isinstance(low, Ge) else "(", "]" if isinstance(high, Le) else ")"
        return f"in {left}{_number(_limit(low))}, {_number(_limit(high))}{right}"
    b = low if low is not None else high
    return f"{_COMPARE[type(b)][0]} {_number(_limit(b))}"


def _within(b, value) -> bool:
    return _COMPARE[type(b)][1](value, _limit(b))


@functools.cache
def _field_bounds(cls: type) -> dict[str, list]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {name: bounds for name, tp in hints.items() if (bounds := _bounds(tp))}


def range_problems(obj: Any) -> list[str]:
    """`name: must be ...` for each field of dataclass `obj` outside the range its annotation declares (None,
    an optional value left unset, passes). A value of the wrong type raises TypeError, as comparing it would."""
    problems = []
    for name, bounds in _field_bounds(type(obj)).items():
        value = getattr(obj, name)
        if value is not None and not all(_within(b, value) for b in bounds):
            problems.append(f"{name}: must be {_describe(bounds)}")
    return problems


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=3e-4", "epochs=1"]` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    problems: list[str] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(f"override {item!r} is not of the form key.path=value")
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            problems.append(f"{key}: override value {raw!r} is not a YAML value (quote it if it is text)")
            continue
        node, where = tree, []
        for part in parts[:-1]:
            where.append(part)
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"{key}: {'.'.join(where)} was already set to a value by another override")
                break
            node = child
        else:
            if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
                problems.append(f"{key}: a section, already given keys by another override")
                continue
            node[parts[-1]] = value
    if problems:
        raise ConfigError("command line", problems)
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
    if tp is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            # YAML 1.1 reads `1e-4` (no dot) as a string; users write learning rates that way.
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{key}: must be a finite number, got {value!r}")
            return value
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        what = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(tp, tp.__name__)
        problems.append(f"{key}: expected {what}, got {value!r}")
    return value


def _build(cls: type[T], data: Any, prefix: str, problems: list[str]) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or '<root>'}: expected a mapping of keys, got {data!r}")
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
        elif dataclasses.is_dataclass(hints[name]):  # an absent section: its defaults, checked like any other
            kwargs[name] = _build(hints[name], {}, key + ".", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{key}: required")
    try:
        obj = cls(**kwargs)
    except TypeError:  # a required key is missing: already recorded
        return None  # type: ignore[return-value]
    # Value checks run even beside unknown keys, so every problem shows at once: the dataclass's own check()
    # (which calls range_problems itself, for it is called outside loading too) or, without one, the ranges.
    # A key whose value was already refused (e.g. `nan`, not a finite number) gets no second line for it.
    check = getattr(obj, "check", None) or (lambda: range_problems(obj))
    refused = {p.split(":", 1)[0] for p in problems}
    try:
        problems.extend(f"{prefix}{p}" for p in check() if f"{prefix}{p}".split(":", 1)[0] not in refused)
    except TypeError:  # a value of the wrong type, already recorded
        pass
    return obj


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    problems: list[str] = []
    obj = _build(cls, data, "", problems)
    if problems:
        raise ConfigError(source, problems)
    return obj


def read_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """The YAML at `path` (or nothing) with the overrides applied: a plain dict, not yet checked."""
    data: dict = {}
    source = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(source, [f"config file not found: {p}"])
        try:
            data = load_yaml(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(source, ["not UTF-8 text"]) from None
        except yaml.YAMLError as e:
            raise ConfigError(source, [f"not valid YAML: {e}"]) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(source, [f"the top level must be a mapping of keys, got {type(data).__name__}"])
    return _merge(data, parse_overrides(list(overrides)))


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Read YAML at `path` (or start empty), apply overrides, check into `cls`."""
    return from_dict(cls, read_config(path, overrides), str(path) if path else "config")


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (tuples as lists) for JSON/YAML output."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the dotted keys that overrides and SageMaker hyperparameters use."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
