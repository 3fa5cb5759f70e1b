"""Every shipped config loads into its dataclass (torchtune's rule)."""

import json
from pathlib import Path

import pytest
import yaml

from radreport.config import load_config
from radreport.modeling import TinyModelSpec
from train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs/train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load(path):
    # real data paths (MEDIQA) are not in the repo: point them at the sample to check everything else
    cfg = load_config(TrainConfig, path, ["data.train=data/sample/train.json"])
    assert cfg.epochs >= 1
    assert path.read_text().startswith("#"), "each config opens with its launch command"


def test_model_spec_loads():
    assert load_config(TinyModelSpec, ROOT / "configs/model/tiny-t5.yaml").t5["d_model"] > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs/deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_configs_parse_and_gather_weights_on_save(path):
    cfg = json.loads(path.read_text())
    zero = cfg["zero_optimization"]
    if zero["stage"] == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # else the export is empty
    assert not cfg.get("bf16", {}).get("enabled") or "bf16" in path.name


@pytest.mark.parametrize("path", sorted((ROOT / "configs/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_name_existing_deepspeed_files(path):
    cfg = yaml.safe_load(path.read_text())
    assert (ROOT / cfg["deepspeed_config"]["deepspeed_config_file"]).is_file()
