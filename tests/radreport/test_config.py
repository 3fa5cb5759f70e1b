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
    for needle in ["name: required", "epochs: expected int", "optim.schedule: must be one of",
                   "optim.betas: unknown key"]:
        assert needle in msg, msg


def test_check_runs_on_valid_types():
    with pytest.raises(ConfigError, match="optim.lr: must be positive"):
        load_config(Cfg, None, ["name=x", "optim.lr=-1"])


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Cfg, tmp_path / "none.yaml")
