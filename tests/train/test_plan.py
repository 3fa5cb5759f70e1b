"""train.plan: hand-computed numbers for a small config, and the formulas held against what torch really does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train import plan

ROOT = Path(__file__).resolve().parents[2]

# A small gated T5 with an untied head: d=8, d_ff=12, 2 heads of 4 (inner n=8), 2 encoder layers, 1 decoder
# layer, vocabulary 50, 4 relative-position buckets.
SMALL = {
    "d_model": 8,
    "d_ff": 12,
    "d_kv": 4,
    "num_heads": 2,
    "num_layers": 2,
    "num_decoder_layers": 1,
    "vocab_size": 50,
    "relative_attention_num_buckets": 4,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
}
B, S, T = 2, 5, 3  # batch, source tokens, target tokens


def small_shape() -> plan.Shape:
    return plan.Shape.from_config(SMALL)


def test_parameters_by_hand():
    # embedding V d = 50*8 = 400
    # encoder layer: q,k,v,o 4*d*n = 256, gated FF 3*d*f = 288, 2 norms 2*d = 16 -> 560; x2 = 1120,
    #   + relative bias 4*2 = 8 + final norm 8 -> 1136
    # decoder layer: self + cross 8*d*n = 512, FF 288, 3 norms 24 -> 824, + bias 8 + final norm 8 -> 840
    # untied lm_head V d = 400; total 400 + 1136 + 840 + 400 = 2776
    counts = plan.parameter_counts(small_shape())
    assert counts == {
        "total": 2776,
        "embedding": 400,
        "encoder": 1136,
        "decoder": 840,
        "lm_head": 400,
        "largest_layer": 824,
    }
    assert plan.parameter_counts(plan.Shape.from_config({**SMALL, "tie_word_embeddings": True}))["total"] == 2376


def test_activation_bytes_by_hand():
    # fp32 on CPU: w = 4, m = 4. RMS norm: 3*w*d + 4 = 100. Gated FF: (7w + m) f = 32*12 = 384 per token.
    # encoder token: 2 norms 200 + 4*w*n 128 + 2*m*d 64 + FF 384 = 776
    # encoder layer: b (s*776 + (2w+m) h s^2) = 2 (3880 + 12*2*25) = 8960
    # decoder token: 3 norms 300 + 6*w*n 192 + 3*m*d 96 + FF 384 = 972
    # decoder layer: b (t*972 + 2*w*n*s + (2w+m) h (t^2 + t s)) = 2 (2916 + 320 + 24*24) = 7624
    # stack ends: b (s + t) (2*m*d + norm) = 2*8*164 = 2624; loss: 4 b t V = 1200
    # kept: 2*8960 + 7624 + 2624 + 1200 = 29368
    # transient: 2*4*b*t*V + 2*w*b*h*max(s^2, t(t+s)) = 2400 + 16*2*25 = 3200
    act = plan.activation_bytes(small_shape(), B, S, T, w=4, m=4, checkpointing=False)
    assert act == {"kept": 29368, "recompute": 0, "transient": 3200}
    # with gradient checkpointing: block inputs w*d*b*(Le*s + Ld*t) = 32*2*13 = 832, the encoder's position bias
    # handed to its second block w*h*s^2 = 200 (one decoder block: none), stack ends 2624, loss 1200 -> 4856;
    # one block recomputed in backward: max(8960, 7624)
    act = plan.activation_bytes(small_shape(), B, S, T, w=4, m=4, checkpointing=True)
    assert act == {"kept": 4856, "recompute": 8960, "transient": 3200}


def test_flops_by_hand():
    # encoder: Le (2 s (4 d n + 3 d f) + 4 s^2 n) = 2 (10*544 + 800) = 12480
    # decoder: 2 t (6 d n + 3 d f) + 4 s d n + 4 t^2 n + 4 t s n = 4032 + 1280 + 288 + 480 = 6080
    # LM head: 2 t d V = 2400; forward 20960 per example
    assert plan.forward_flops(small_shape(), S, T) == 20960


def test_generation_and_states_by_hand():
    # g=2 inputs x 3 beams = 6 rows: encoder states 6*s*d*w = 960; caches 6*Ld*2*(s+T)*n*w = 6*2*9*32 = 3456;
    # logits 3*4*6*V = 3600 -> 8016
    assert plan.generation_bytes(small_shape(), g=2, beams=3, src=5, new_tokens=4, w=4) == 8016
    fp32 = plan.ZeroSettings("x", 3, 4, 1e9, False, False)
    # 20 bytes per parameter over 2 ranks: 20 * 2776 / 2 = 27760 on the device, none on the host
    assert plan.model_state_bytes(2776, 2, fp32) == (27760, 0)
    # gathered weights live from forward to backward: 4 * min(P, reuse/2)
    assert plan.zero3_working_bytes(2776, fp32) == 4 * 2776
    assert plan.zero3_working_bytes(10**10, fp32) == 4 * 5e8
    # offloaded optimizer: weights stay (4 P / N), gradients + master + flat copy + Adam go to the host
    offload = plan.ZeroSettings("x", 3, 4, 1e9, True, False)
    assert plan.model_state_bytes(2776, 2, offload) == (5552, 22208)
    assert plan.checkpoint_bytes(2776, fp32) == 12 * 2776


def build_small_t5(attn: str):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(**SMALL, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.1)
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))  # untie, as flan-t5
    return model


def batch():
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(3, 50, (B, S), generator=g),
        "attention_mask": torch.ones(B, S, dtype=torch.long),
        "labels": torch.randint(3, 50, (B, T), generator=g),
    }


def test_parameter_count_is_the_models():
    model = build_small_t5("sdpa")
    assert sum(p.numel() for p in model.parameters()) == plan.parameter_counts(small_shape())["total"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_count_is_what_autograd_keeps(checkpointing):
    """Every tensor autograd saves for backward (unique storages, weights excluded), in training mode."""
    model = build_small_t5("sdpa").train()
    if checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(x):
        storage = x.untyped_storage()
        if storage.data_ptr() not in weights and x.dtype.is_floating_point:
            saved[storage.data_ptr()] = storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model(**batch())
    kept = plan.activation_bytes(small_shape(), B, S, T, w=4, m=4, checkpointing=checkpointing)["kept"]
    assert sum(saved.values()) - 4 == kept  # 4: the loss itself (a 0-d fp32 tensor)


def test_flops_are_what_the_flop_counter_counts():
    """torch's FlopCounterMode counts every matmul (eager attention: SDPA's CPU kernel is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_small_t5("eager").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**batch())
    assert counter.get_total_flops() == B * plan.forward_flops(small_shape(), S, T)


def test_flan_t5_xl_counts_its_head():
    """2.85B, not the 2.78B of a tied count: the head is 32,128 x 2,048 = 65.8M more."""
    config = json.loads((ROOT / "configs/model/flan-t5-xl.config.json").read_text())
    counts = plan.parameter_counts(plan.Shape.from_config(config))
    assert counts["total"] == 2_849_757_184
    assert counts["lm_head"] == 32128 * 2048
    base = json.loads((ROOT / "configs/model/flan-t5-base.config.json").read_text())
    assert plan.parameter_counts(plan.Shape.from_config(base))["total"] == 247_577_856


def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train.plan", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cpu_plan_of_the_tiny_default(tmp_path):
    out = tmp_path / "plan.json"
    r = run_plan("--config", "configs/train/tiny-cpu.yaml", "--cpu", "--world-size", "2", "--json", str(out))
    assert r.returncode == 0, r.stderr
    p = json.loads(out.read_text())
    assert p["world_size"] == 2 and p["cpu"] and p["fits"]
    assert p["deepspeed"]["weight_bytes"] == 4 and p["deepspeed"]["path"].endswith("zero3-fp32.json")
    terms = [v for k, v in p["memory"].items() if k != "total"]
    assert p["memory"]["total"] == pytest.approx(sum(terms))
    # the framework term: this machine's imports, measured by the planner, plus the rest of a rank
    assert 0.1 < p["framework_imports_gib"] < 2.0
    assert p["memory"]["framework"] == pytest.approx(p["framework_imports_gib"] + plan.CPU_RANK_EXTRA_GIB)
    assert p["batch"]["size"] == 16 and p["batch_from"] == "data"
    assert 0 < p["batch"]["source"] <= 256 and 0 < p["batch"]["target"] <= 64
    assert p["generation"]["batch"] == 16 and p["generation"]["largest_batch"] > 16  # tiny-cpu.yaml
    assert "memory per CPU process" in r.stdout


def test_xl_plan_on_a_p3_at_the_limits(tmp_path):
    out = tmp_path / "plan.json"
    r = run_plan(
        "--config",
        "configs/train/flan-t5-xl-p3.16xlarge.yaml",
        "data.train=data/sample/train.json",
        "--at-limits",
        "--json",
        str(out),
    )
    p = json.loads(out.read_text())
    assert r.returncode == (0 if p["fits"] else 1)
    assert p["params"]["total"] == 2_849_757_184
    assert p["batch"] == {"size": 8, "source": 512, "target": 128} and p["batch_from"] == "limits"
    assert p["world_size"] == 8 and p["device"] == "V100-16GB"
    assert p["checkpoint_gb"] == pytest.approx(12 * 2_849_757_184 / 1e9)
    assert "2.850B parameters" in r.stdout and "lm_head 0.066B untied" in r.stdout


def test_a_model_without_a_config_is_refused(tmp_path):
    r = run_plan("--config", "configs/train/tiny-cpu.yaml", "model.tiny_spec=''", "model.name=someone/unknown-model")
    assert r.returncode == 2
    assert "configs/model/unknown-model.config.json" in r.stderr


def test_the_readme_command_plans_without_the_data_at_hand(tmp_path):
    """`python -m train.plan --config configs/train/flan-t5-xl-p3.16xlarge.yaml` on a fresh checkout: the data
    (data/mediqa/train.json) is not there, so memory is planned at the config's limits and the disk with the same
    1 GiB of data that `train.sagemaker` assumes: both size the same volume."""
    out = tmp_path / "plan.json"
    r = run_plan("--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--json", str(out))
    assert r.returncode == 0, r.stderr
    p = json.loads(out.read_text())
    assert p["batch_from"] == "limits" and p["batch"] == {"size": 8, "source": 512, "target": 128}
    assert p["disk"]["data_bytes"] == 1024**3 and p["disk"]["volume_gb"] == 182
    assert "data: data/mediqa/train.json is not here: memory planned at the config's token limits" in r.stdout


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--nodes", "0"], "argument --nodes: must be >= 1, got 0"),
        (["--mfu", "0"], "argument --mfu: must be between 0 and 1 (exclusive), got 0"),
        (["--world-size", "-2"], "argument --world-size: must be >= 0, got -2"),
        (["--assume-rows", "-5"], "argument --assume-rows: must be >= 0, got -5"),
        (["--memory-gib", "nan"], "argument --memory-gib: expected a finite number, got 'nan'"),
        (["--json", "."], "error: --json: . is an existing directory, expected a file name"),
        (["--deepspeed", "README.md"], "README.md: not valid JSON"),
        (["--world-size", "16"], "error: --world-size 16: 1 x p3.16xlarge has 8 GPUs (one process each)"),
    ],
)
def test_bad_flags_are_refused_before_planning(flag, message):
    r = run_plan("--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", *flag)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "memory per GPU" not in r.stdout


def test_deepspeed_config_that_is_not_utf8_is_refused(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_bytes(b'{"zero_optimization": {"stage": 3}, "x": "\xff"}')
    r = run_plan("--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "--deepspeed", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}: not UTF-8 text", r.stderr


def test_assumed_rows_scale_the_data_on_disk_too(tmp_path):
    out = tmp_path / "plan.json"
    args = ["--config", "configs/train/flan-t5-xl-p3.16xlarge.yaml", "data.train=data/sample/train.json"]
    r = run_plan(*args, "--assume-rows", "91544", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows_in_sample = len(json.loads((ROOT / "data/sample/train.json").read_text()))
    scale = 91544 * (1 - 0.05) / (rows_in_sample * (1 - 0.05))  # the config holds out 5% either way
    size = (ROOT / "data/sample/train.json").stat().st_size
    assert json.loads(out.read_text())["disk"]["data_bytes"] == int(size * scale)
