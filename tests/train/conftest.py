"""Helpers to run the real training command (accelerate launch, DeepSpeed, several CPU processes)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from train.local_launch import launch_command

ROOT = Path(__file__).resolve().parents[2]


def launch(output_dir: Path, overrides: list[str], processes: int = 2, timeout: int = 600, env: dict | None = None):
    """`accelerate launch --config_file configs/accelerate/cpu-2proc.yaml -m train ...`, as a user runs it."""
    cmd = launch_command("configs/train/tiny-cpu.yaml", output_dir, processes, overrides)
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def small_train_file(tmp_path_factory) -> Path:
    """600 rows of the bundled sample: ~18 optimizer steps an epoch at 2 x 16."""
    from radreport.schema import load_examples, write_examples

    path = tmp_path_factory.mktemp("data") / "train.json"
    write_examples(path, load_examples(ROOT / "data/sample/train.json")[:600])
    return path


def small_run_overrides(train_file: Path) -> list[str]:
    return [
        f"data.train={train_file}",
        "epochs=2",
        "log_every_steps=3",
        "eval.rouge_samples=16",
        "checkpoint.every_steps=5",
        "checkpoint.keep_last=1",
    ]


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory, small_train_file) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    r = launch(out, small_run_overrides(small_train_file))
    assert r.returncode == 0, r.stderr[-4000:]
    out.with_suffix(".log").write_text(r.stdout + r.stderr)  # what the user saw, for the log tests
    return out
