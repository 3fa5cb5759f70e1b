"""The real training command on this machine's CPUs: `accelerate launch` of `-m train` with several gloo
processes, as a user runs it (tests and bench/scale_rehearsal.py start it from here)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ are read from it
CPU_ACCELERATE_CONFIG = "configs/accelerate/cpu-2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_command(config: str | Path, output_dir: str | Path, overrides: list[str]) -> list[str]:
    """`python -m train --config C --output-dir D overrides...`: one process, no launcher."""
    return [sys.executable, "-m", "train", "--config", str(config), "--output-dir", str(output_dir), *overrides]


def launch_command(config: str | Path, output_dir: str | Path, processes: int, overrides: list[str]) -> list[str]:
    """`accelerate launch --num_processes N -m train --config C --output-dir D overrides...`, on a free port."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CPU_ACCELERATE_CONFIG]
    processes_and_port = ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    return [*launcher, *processes_and_port, *train_command(config, output_dir, overrides)[1:]]
