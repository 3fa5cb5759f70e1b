from dataclasses import dataclass, field
from typing import Literal

import pytest

from radreport.config import ConfigError, load_config, parse_overrides


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
