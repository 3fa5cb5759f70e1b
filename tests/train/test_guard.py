"""The fp16 overflow guard, on the tiny T5 (one process, no DeepSpeed)."""

import pytest
import torch

from radreport.modeling import load_model
from train.guard import ActivationOverflow, install_overflow_guard


def wo_names(model) -> list[str]:
    return [name for name, _ in model.named_modules() if name.endswith(".wo")]


def forward(model):
    ids = torch.tensor([[5, 6, 7, 1]])
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([[8, 9, 1]]))


def overflow(model, name: str) -> None:
    """Make this `wo` layer's output infinite (its weights far beyond any float range once summed)."""
    with torch.no_grad():
        model.get_submodule(name).weight.fill_(3e38)


def test_guard_hooks_every_wo_and_lets_finite_forwards_through(tiny_model_dir):
    model = load_model(tiny_model_dir)
    names = wo_names(model)
    assert len(names) == 4  # 2 encoder + 2 decoder blocks in configs/model/tiny-t5.yaml
    assert install_overflow_guard(model) == len(names)
    assert torch.isfinite(forward(model).loss)


def test_guard_stops_at_the_first_non_finite_wo_output_naming_it(tiny_model_dir):
    model = load_model(tiny_model_dir)
    install_overflow_guard(model)
    first, later = "encoder.block.1.layer.1.DenseReluDense.wo", "decoder.block.0.layer.2.DenseReluDense.wo"
    overflow(model, later)
    with pytest.raises(ActivationOverflow, match=rf"^non-finite activation in {later} \(dtype torch.float32\)"):
        forward(model)
    overflow(model, first)  # now an earlier layer overflows too: the run stops there, before the later one runs
    with pytest.raises(ActivationOverflow, match=rf"^non-finite activation in {first} "):
        forward(model)


def test_guard_refuses_a_model_without_wo_layers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no `wo` feed-forward layers"):
        install_overflow_guard(model)
