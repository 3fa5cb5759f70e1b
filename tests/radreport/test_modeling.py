import json
import re

import pytest
import torch
from safetensors.torch import load_file

from radreport.build_tiny import tokenizer_corpus
from radreport.config import ConfigError, load_config
from radreport.errors import InputError
from radreport.modeling import (
    HeadTyingError,
    ModelMeta,
    TinyModelSpec,
    build_tiny_t5,
    check_output_head,
    count_parameters,
    load_model,
    load_seq2seq,
    load_tokenizer,
    own_output_head,
    read_meta,
)
from radreport.schema import load_examples

from ..conftest import ROOT, SAMPLE


def test_tiny_model_builds_saves_reloads_and_generates(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "radreport.json"} <= files
    tok = load_tokenizer(tiny_model_dir)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    text = "There is a small left pleural effusion. ___ year old man."
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    model = load_model(tiny_model_dir)
    a = load_model(tiny_model_dir)
    for (n, p), (_, q) in zip(model.named_parameters(), a.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    batch = tok(["Lungs are clear.", "Small right pneumothorax."], return_tensors="pt", padding=True)
    out = model.generate(**batch, num_beams=2, max_new_tokens=5)
    assert out.shape[0] == 2 and out.shape[1] <= 6
    assert read_meta(tiny_model_dir) == ModelMeta(trained_by=read_meta(tiny_model_dir).trained_by)


def test_tiny_model_has_its_own_head_like_flan_t5(tiny_model_dir):
    """configs/model/tiny-t5.yaml says tie_word_embeddings: false; the files and the loaded model agree."""
    stored = load_file(tiny_model_dir / "model.safetensors")
    assert {"lm_head.weight", "shared.weight"} <= stored.keys()
    assert not torch.equal(stored["lm_head.weight"], stored["shared.weight"])
    assert torch.equal(own_output_head(tiny_model_dir), stored["lm_head.weight"])
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["T5ForConditionalGeneration"] and config["scale_decoder_outputs"] is False
    model = load_model(tiny_model_dir)
    assert model.lm_head.weight is not model.shared.weight
    assert model.encoder.embed_tokens.weight is model.shared.weight is model.decoder.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, stored["lm_head.weight"])
    assert torch.equal(model.shared.weight, stored["shared.weight"])
    # the logged parameter count holds the head once and the tied embeddings once
    d, v = model.config.d_model, model.config.vocab_size
    assert count_parameters(model) == sum(t.numel() for t in stored.values()) and v * d * 2 < count_parameters(model)


def test_a_tied_spec_builds_a_tied_model(tmp_path):
    spec = tmp_path / "tied.yaml"
    text = (
        (ROOT / "configs/model/tiny-t5.yaml")
        .read_text()
        .replace("tie_word_embeddings: false", "tie_word_embeddings: true")
    )
    spec.write_text(text)
    corpus = tokenizer_corpus(load_examples(SAMPLE / "train.json")[:200])
    out = build_tiny_t5(spec, corpus, tmp_path / "tied")
    assert "lm_head.weight" not in load_file(out / "model.safetensors")
    assert own_output_head(out) is None
    model = load_seq2seq(out, torch.float32)
    assert model.lm_head.weight is model.shared.weight and model.config.scale_decoder_outputs is True


def test_head_check_fails_loudly_when_the_head_is_lost(tiny_model_dir):
    stored = own_output_head(tiny_model_dir)
    model = load_seq2seq(tiny_model_dir, torch.float32)
    check_output_head(model, stored)  # as loaded: fine
    with pytest.raises(HeadTyingError, match="the checkpoint ties lm_head to `shared`, the loaded model does not"):
        check_output_head(model, None, where="x")
    with pytest.raises(HeadTyingError, match="differs from the one stored"):
        check_output_head(model, stored + 1)
    model.lm_head.weight = model.shared.weight  # what transformers does under ZeRO-3 (empty partitions compare equal)
    with pytest.raises(HeadTyingError, match="ties it to `shared` \\(the pretrained head would be lost\\)"):
        check_output_head(model, stored)


def test_parameter_count_uses_zero3_full_sizes():
    layer = torch.nn.Linear(4, 3, bias=False)
    assert count_parameters(layer) == 12
    layer.weight.ds_numel = 1_000_000  # a ZeRO-3 partition keeps the full size here; its data holds a shard
    assert count_parameters(layer) == 1_000_000


@pytest.mark.parametrize(
    "line, message",
    [
        ("  d_modle: 128", "t5.d_modle: unknown key"),
        ("  num_heads: 0", "t5.num_heads: must be >= 1"),
        ("  dropout_rate: 1.5", "t5.dropout_rate: must be in [0, 1)"),
        ("  tie_word_embeddings: 'no'", "t5.tie_word_embeddings: expected true or false, got 'no'"),
        ("  feed_forward_proj: gated-swish", "t5.feed_forward_proj: must be one of"),
        ("  relative_attention_max_distance: 8", "t5.relative_attention_max_distance: must be >= "),
    ],
)
def test_tiny_spec_t5_section_is_typed(tmp_path, line, message):
    base = (ROOT / "configs/model/tiny-t5.yaml").read_text()
    key = line.split(":")[0]
    lines = [x for x in base.splitlines() if not x.startswith(key + ":")]
    lines.insert(lines.index("t5:") + 1, line)
    spec = tmp_path / "spec.yaml"
    spec.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="spec.yaml: ") as e:
        load_config(TinyModelSpec, spec)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "meta, problem",
    [
        ({"max_source_tokens": 0}, "max_source_tokens: must be >= 8"),  # as data.max_source_tokens: one range
        ({"max_target_tokens": -4}, "max_target_tokens: must be >= 2"),
    ],
)
def test_a_model_directorys_token_limits_have_training_s_ranges(tmp_path, meta, problem):
    (tmp_path / "radreport.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'radreport.json'}: {problem}")):
        read_meta(tmp_path)


@pytest.mark.parametrize(
    "override, problem",
    [
        ("tokenizer.character_coverage=5.0", "tokenizer.character_coverage: must be in [0.98, 1]"),
        ("tokenizer.extra_ids=-5", "tokenizer.extra_ids: must be in [0, 1000]"),
    ],
)
def test_tokenizer_settings_sentencepiece_would_refuse_mid_build_are_refused_at_load(override, problem):
    from radreport.modeling import TinyModelSpec

    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(TinyModelSpec, ROOT / "configs/model/tiny-t5.yaml", [override])
