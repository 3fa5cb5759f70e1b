"""The real command: accelerate launch, DeepSpeed ZeRO-3, 2 CPU processes (gloo), the tiny T5."""

import subprocess
import sys

import torch
from safetensors.torch import load_file

from radreport.modeling import load_model, load_tokenizer, read_meta
from radreport.prompt import render

from .conftest import ROOT, launch, metrics, small_run_overrides


def test_two_process_zero3_run_learns_and_exports(uninterrupted_run):
    m = metrics(uninterrupted_run)
    losses = [x["loss"] for x in m if "loss" in x]
    assert len(losses) >= 8 and losses[-1] < 0.5 * losses[0], losses
    evals = [x for x in m if "eval_loss" in x]
    assert [e["epoch"] for e in evals] == [1.0, 2.0] and all("eval_rougeL" in e for e in evals)
    model_dir = uninterrupted_run / "model"
    meta = read_meta(model_dir)
    assert meta.prompt_template == "instruction" and meta.max_target_tokens == 64
    model, tok = load_model(model_dir), load_tokenizer(model_dir)  # one process, plain from_pretrained
    assert all(p.numel() > 0 and torch.isfinite(p).all() for p in model.parameters())
    batch = tok([render("There is a small left pleural effusion. The heart size is normal.")], return_tensors="pt")
    text = tok.decode(model.generate(**batch)[0], skip_special_tokens=True)
    assert text.strip() and model.generation_config.num_beams == 4


def test_log_lines_match_sagemaker_metric_regexes(uninterrupted_run):
    import re

    log = (uninterrupted_run / "metrics.jsonl").read_text()
    assert log  # the stdout lines are checked in the interrupted run below; here: every step logged has epoch
    assert all("epoch" in x for x in metrics(uninterrupted_run))
    line = "{'loss': 1.2345, 'learning_rate': 0.001, 'epoch': 0.5, 'step': 3}"
    assert re.search(r"'loss': ([0-9]+\.[0-9]+)", line) and re.search(r"'epoch': ([0-9]+\.[0-9]+)", line)


def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted_run, small_train_file, tmp_path):
    out = tmp_path / "run"
    first = launch(out, small_run_overrides(small_train_file) + ["interrupt_after_steps=7"])
    assert first.returncode != 0 and "interrupted on purpose after step 7" in first.stderr
    assert "'loss': " in first.stdout + first.stderr  # SageMaker metric regexes read these lines
    assert (out / "checkpoints/step-00000007/trainer_state.json").is_file()
    assert not (out / "model").exists()
    second = launch(out, small_run_overrides(small_train_file))
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from step-00000007" in second.stdout + second.stderr
    a = load_file(uninterrupted_run / "model/model.safetensors")
    b = load_file(out / "model/model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(small_train_file, tmp_path):
    r = launch(tmp_path, small_run_overrides(small_train_file) + ["inject_nonfinite_at_step=6", "epochs=1"])
    assert r.returncode != 0
    assert "non-finite loss at optimizer step 6" in r.stderr and "study_ids" in r.stderr
    assert (tmp_path / "checkpoints/step-00000005/trainer_state.json").is_file()
    assert not (tmp_path / "model").exists()


def test_one_process_without_launcher(trained_model_dir):
    """`python -m train` with no launcher (the fixture runs it): plain single process, model exported."""
    run = trained_model_dir.parent
    assert load_model(trained_model_dir) is not None
    assert [x["epoch"] for x in metrics(run) if "eval_loss" in x] == [1.0]


def test_bad_config_fails_before_any_process_group(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "--config",
            "configs/train/tiny-cpu.yaml",
            "--output-dir",
            str(tmp_path),
            "optim.lr=-1",
            "data.train=nope.json",
            "batch.batching=bucketed",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    for key in ("optim.lr: must be positive", "data.train: data file not found: nope.json", "batch.batching"):
        assert key in r.stderr, r.stderr
    assert not (tmp_path / "train_config.json").exists()


def test_fp16_deepspeed_refuses_t5_without_guard(tmp_path):
    env = {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(ROOT / "configs/deepspeed/zero3-fp16.json"),
    }
    import os

    r = subprocess.run(
        [sys.executable, "-m", "train", "--config", "configs/train/tiny-cpu.yaml", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert r.returncode == 2 and "overflows fp16" in r.stderr and "fp16_overflow_guard" in r.stderr
