import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Interval, Le

from radreport.config import (
    ConfigError,
    Fraction,
    PositiveInt,
    load_config,
    parse_overrides,
    range_problems,
    read_config,
)


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    schedule: Literal["constant", "linear"] = "constant"

    def check(self):
        return [] if self.lr > 0 else ["lr: must be positive"]


@dataclass(frozen=True)
class Cfg:
    name: str
    epochs: int = 1
    optim: Optim = field(default_factory=Optim)
    paths: tuple[str, ...] = ()


def test_yaml_plus_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\noptim:\n  lr: 0.001\n")
    cfg = load_config(Cfg, p, ["optim.lr=3e-4", "epochs=2", "paths=[x, y]"])
    assert cfg == Cfg(name="a", epochs=2, optim=Optim(lr=3e-4), paths=("x", "y"))


def test_every_problem_reported_at_once(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: two\noptim:\n  lr: -1\n  schedule: cosine\n  betas: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p)
    msg = str(e.value)
    for needle in [
        "name: required",
        "epochs: expected an integer",
        "optim.schedule: must be one of",
        "optim.betas: unknown key",
    ]:
        assert needle in msg, msg


def test_check_runs_on_valid_types():
    with pytest.raises(ConfigError, match="optim.lr: must be positive"):
        load_config(Cfg, None, ["name=x", "optim.lr=-1"])


@dataclass(frozen=True)
class Data:
    train: str = ""

    def check(self):
        return [] if self.train else ["train: required"]


@dataclass(frozen=True)
class WithSection:
    data: Data = field(default_factory=Data)


def test_an_absent_section_is_checked_like_a_present_one():
    with pytest.raises(ConfigError, match="data.train: required"):
        load_config(WithSection, None)
    assert load_config(WithSection, None, ["data.train=x"]) == WithSection(Data("x"))


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "none.yaml")


@dataclass(frozen=True)
class Flags:
    enabled: bool = False
    lr: float = 1e-3
    steps: int = 1


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["lr=.nan"], "lr: must be a finite number"),
        (["lr=-.inf"], "lr: must be a finite number"),
        (["lr=inf"], "lr: expected a number, got 'inf'"),
        (["enabled=yes please"], "enabled: expected true or false"),
        (["enabled='true'"], "enabled: expected true or false"),
        (["steps=true"], "steps: expected an integer"),
        (["steps=[1"], "steps: override value '[1' is not a YAML value"),
        (["=3"], "is not of the form key.path=value"),
        (["a..b=3"], "is not of the form key.path=value"),
    ],
)
def test_bad_values_are_named_without_a_traceback(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_config(Flags, None, overrides)


def test_text_numbers_still_read_as_floats():
    assert load_config(Flags, None, ["lr=1e-4"]).lr == 1e-4


def test_a_value_and_its_section_in_two_overrides_conflict():
    with pytest.raises(ConfigError, match="optim.lr: optim was already set to a value"):
        load_config(Cfg, None, ["name=x", "optim=adam", "optim.lr=1"])
    with pytest.raises(ConfigError, match="optim: expected a mapping of keys, got 'adam'"):
        load_config(Cfg, None, ["name=x", "optim=adam"])


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "3\n"])
def test_top_level_that_is_not_a_mapping(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(Cfg, p)


def test_config_that_is_not_utf8(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(Cfg, p)


# ---- ranges declared with the field (annotated-types), checked by range_problems


@dataclass(frozen=True)
class Ranged:
    steps: PositiveInt = 1
    share: Fraction = 0.0
    top_p: Annotated[float, Interval(gt=0, le=1)] = 1.0
    seed: Annotated[int, Ge(0), Le(2**63 - 1)] | None = None
    note: int = -5  # no range declared: anything goes


@dataclass(frozen=True)
class RangedWithCheck(Ranged):
    def check(self):
        return range_problems(self) + (["steps: must be even"] if self.steps % 2 else [])


def test_ranges_are_read_from_the_annotations_with_one_message_form():
    assert range_problems(Ranged()) == []
    bad = Ranged(steps=0, share=1.0, top_p=0.0, seed=-1)
    assert range_problems(bad) == [
        "steps: must be >= 1",
        "share: must be in [0, 1)",
        "top_p: must be in (0, 1]",
        "seed: must be in [0, 2**63 - 1]",
    ]
    assert range_problems(Ranged(seed=2**63)) == ["seed: must be in [0, 2**63 - 1]"]
    assert range_problems(Ranged(top_p=float("nan"))) == ["top_p: must be in (0, 1]"]


def test_a_value_refused_for_its_type_is_not_refused_again_for_its_range():
    with pytest.raises(ConfigError) as e:
        load_config(Ranged, None, ["share=.nan", "steps=0"])
    assert e.value.problems == ["share: must be a finite number, got nan", "steps: must be >= 1"]


def test_loading_checks_ranges_with_or_without_a_check_method():
    with pytest.raises(ConfigError) as e:
        load_config(Ranged, None, ["steps=0", "share=1"])
    assert e.value.problems == ["steps: must be >= 1", "share: must be in [0, 1)"]
    with pytest.raises(ConfigError) as e:
        load_config(RangedWithCheck, None, ["steps=-1"])
    assert e.value.problems == ["steps: must be >= 1", "steps: must be even"]


def test_the_service_schema_reads_the_same_ranges():
    """pydantic reads annotated-types bounds too: the generation contract's types bound the request fields."""
    from pydantic import TypeAdapter, ValidationError

    from radreport.generation import GenerationParams, Seed, Temperature, TopP

    for tp, bad, good in [(TopP, 0.0, 1.0), (Temperature, 0.001, 100.0), (Seed, 2**63, 2**63 - 1)]:
        with pytest.raises(ValidationError):
            TypeAdapter(tp).validate_python(bad)
        assert TypeAdapter(tp).validate_python(good) == good
    assert GenerationParams(do_sample=True, top_p=0.0).check() == ["top_p: must be in (0, 1]"]


def test_a_key_written_twice_in_yaml_is_refused_with_its_line_and_a_merge_may_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\nepochs: 3\noptim:\n  lr: 0.1\nepochs: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: not valid YAML: line 5: 'epochs' is given twice")):
        load_config(Cfg, p)
    p.write_text("defaults: &d {epochs: 2}\nrun:\n  <<: *d\n  epochs: 5\n")
    assert read_config(p)["run"] == {"epochs": 5}  # YAML's merge: the explicit key wins, no duplicate
