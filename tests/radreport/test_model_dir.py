"""A model directory is checked before anything loads it: every way it can be unusable is one named error."""

import json
import shutil

import pytest

from radreport.errors import InputError
from radreport.generation import params_from_model
from radreport.modeling import check_model_dir, load_model, load_tokenizer, read_meta


def set_generation(model_dir, **values):
    path = model_dir / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


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
        # transformers falls back to its own defaults (128 new tokens) when it cannot read generation_config.json
        (lambda d: (d / "generation_config.json").write_text("{bad"), "generation_config.json: not valid JSON"),
        (lambda d: (d / "generation_config.json").write_text("[1]"), "generation_config.json: expected a JSON object"),
        (
            lambda d: set_generation(d, num_beams="4"),
            r"generation_config.json: num_beams: expected an integer, got \"4\"",
        ),
        (lambda d: set_generation(d, max_new_tokens=2.5), "max_new_tokens: expected an integer, got 2.5"),
        (lambda d: set_generation(d, early_stopping="never"), "early_stopping: expected true or false"),
        (
            lambda d: set_generation(d, max_new_tokens=0),
            "generation_config.json: `max_new_tokens` must be greater than 0",
        ),
        (lambda d: set_generation(d, num_beams=0), r"generation_config.json: num_beams: must be in \[1, 1024\]"),
        (lambda d: set_generation(d, do_sample=True, top_p=5), r"generation_config.json: top_p: must be in \(0, 1\]"),
        # generate() takes the special ids from this file alone
        (lambda d: (d / "generation_config.json").write_text("{}"), "decoder_start_token_id: missing"),
        (
            lambda d: set_generation(d, decoder_start_token_id=999999),
            r"decoder_start_token_id: 999999 is not a token id of this model \(\d+ embedding rows\)",
        ),
        (lambda d: set_generation(d, eos_token_id=[1, -1]), "eos_token_id: -1 is not a token id of this model"),
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


def test_generation_defaults_are_optional_and_read_as_written(model_copy):
    set_generation(model_copy, max_new_tokens=64, num_beams=3, do_sample=False, temperature=0.5)
    params = params_from_model(load_model(model_copy))
    assert (params.max_new_tokens, params.num_beams, params.temperature) == (64, 3, 1.0)  # temperature: unused
    (model_copy / "generation_config.json").unlink()  # as many hub models: transformers derives one
    check_model_dir(model_copy)
