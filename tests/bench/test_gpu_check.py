"""bench/gpu_check.py on CPU with the tiny shape: the numbers it reports are real, and its counters see overflows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_on_cpu(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, "bench/gpu_check.py", "--shape", "tiny", "--device", "cpu", "--steps", "2"]
    cmd += ["--batch", "2", "--source", "32", "--target", "8", "--serve-batch", "3", "--serve-new-tokens", "4"]
    r = subprocess.run([*cmd, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny" and result["batch"] == {"size": 2, "source": 32, "target": 8}
    rows = {row["dtype"]: row for row in result["dtypes"]}
    assert set(rows) == {"fp32", "bf16", "fp16"}
    for row in rows.values():
        assert row["step"] == "adamw" and row["wo_layers"] == 4  # 2 encoder + 2 decoder feed-forwards
        assert row["tokens_per_s"] == pytest.approx(2 * 40 / row["seconds_per_step"])
        assert row["mfu"] is None  # no peak known for a CPU
    assert rows["fp32"]["wo_nonfinite"] == 0 and rows["fp32"]["loss_finite"]
    assert rows["fp16"]["guard"].startswith(("passed", "stopped"))
    serve = result["serving"]
    assert serve["requests"] == 3 and serve["batched_rps"] > 0 and serve["one_at_a_time_rps"] > 0
    assert serve["speedup"] == pytest.approx(serve["batched_rps"] / serve["one_at_a_time_rps"])
    assert "bf16 beam-4 serving" in r.stdout


def test_counters_see_an_overflow_and_the_guard_stops():
    """A wo weight pushed past the fp16 range: its output's inf/NaN are counted, and the guard names the layer."""
    gpu_check = load_gpu_check()
    from bench.model_shapes import build_model
    from train.guard import ActivationOverflow, install_overflow_guard

    model = build_model("tiny", dtype=torch.float16).eval()
    wo = model.encoder.block[1].layer[1].DenseReluDense.wo
    with torch.no_grad():
        wo.weight.fill_(60000.0)
    data = gpu_check.make_batch(2, 16, 4, "cpu")
    counter = gpu_check.WoCounter(model)
    with torch.no_grad():
        model(**data)
    counter.remove()
    name = "encoder.block.1.layer.1.DenseReluDense.wo"
    assert 0 < counter.nonfinite[name] <= 2 * 16 * model.config.d_model
    assert all(v == 0 for k, v in counter.nonfinite.items() if k.startswith("encoder.block.0"))
    install_overflow_guard(model)
    with pytest.raises(ActivationOverflow, match=name):
        with torch.no_grad():
            model(**data)
