"""A model directory is checked before anything loads it: every way it can be unusable is one named error."""

import json
import shutil

import pytest

from radreport.errors import InputError
from radreport.modeling import check_model_dir, load_model, load_tokenizer, read_meta


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def test_good_directory_loads(model_copy):
    check_model_dir(model_copy)
    tokenizer, model = load_tokenizer(model_copy), load_model(model_copy)
    assert len(tokenizer) == model.config.vocab_size


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: [f.unlink() for f in d.glob("tokenizer*")], "no tokenizer files"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{"), "config.json: not valid JSON"),
        (lambda d: [f.unlink() for f in d.glob("*.safetensors")], "no weights"),
        (lambda d: (d / "radreport.json").write_text(json.dumps({"prompt_template": "nope"})), "unknown prompt"),
        (lambda d: (d / "radreport.json").write_text("[1]"), "radreport.json: expected a JSON object"),
    ],
)
def test_damaged_directory_is_refused_naming_it(model_copy, damage, needle):
    damage(model_copy)
    with pytest.raises(InputError, match=needle) as e:
        load_tokenizer(model_copy)
    assert str(model_copy) in str(e.value)


def test_truncated_weights_are_refused(model_copy):
    (weights,) = model_copy.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InputError, match="the model cannot be loaded"):
        load_model(model_copy)


def test_another_models_tokenizer_is_refused(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["vocab_size"] = 32128  # the tokenizer has ~1,500 tokens: not this model's
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="not this model's tokenizer"):
        load_tokenizer(model_copy)


def test_missing_directory_and_hub_ids(tmp_path):
    with pytest.raises(InputError, match="model directory not found"):
        check_model_dir(tmp_path / "runs" / "nope" / "model")
    check_model_dir("google/flan-t5-xl")  # a hub id is left to transformers
    assert read_meta("google/flan-t5-xl").prompt_template == "instruction"
