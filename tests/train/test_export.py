"""The export check (train/checkpoint.verify_export) against what the model needs, one process."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from radreport.modeling import load_model
from train.checkpoint import ExportError, expected_weights, verify_export


def test_expected_weights_group_tied_names(tiny_model_dir):
    groups = expected_weights(load_model(tiny_model_dir))
    shared = next(g for g in groups if "shared.weight" in g)
    assert sorted(shared) == ["decoder.embed_tokens.weight", "encoder.embed_tokens.weight", "shared.weight"]
    assert ["lm_head.weight"] in groups  # a matrix of its own: the export must hold it


def test_verify_export_accepts_a_full_save_and_refuses_a_missing_head(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = tmp_path / "export"
    model.save_pretrained(out, state_dict=state_dict)
    verify_export(out, state_dict, expected_weights(model))
    # a save (or a gathered dict) without lm_head: on reload transformers would tie it to `shared`, silently
    saved = load_file(out / "model.safetensors")
    del saved["lm_head.weight"]
    save_file(saved, out / "model.safetensors", metadata={"format": "pt"})
    without_head = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
    with pytest.raises(ExportError, match=r"lm_head.weight missing from the saved files \(the model needs it\)"):
        verify_export(out, without_head, expected_weights(model))


def test_verify_export_refuses_empty_or_changed_tensors(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = tmp_path / "export"
    model.save_pretrained(out, state_dict=state_dict)
    changed = dict(state_dict, **{"lm_head.weight": state_dict["lm_head.weight"] + 1})
    with pytest.raises(ExportError, match="lm_head.weight differs after reading it back"):
        verify_export(out, changed, expected_weights(model))
    empty = dict(state_dict, **{"shared.weight": torch.empty(0)})
    with pytest.raises(ExportError, match="shared.weight is empty: ZeRO-3 shards were not gathered"):
        verify_export(out, empty, expected_weights(model))
    with pytest.raises(ExportError, match="gathered state dict is empty"):
        verify_export(out, {}, expected_weights(model))
