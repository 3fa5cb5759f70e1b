"""A real `python -m serve` child process on loopback, ready when it answers /readyz (tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ are read from it


class Server:
    def __init__(self, model_dir: Path, log_path: Path, *overrides: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve",
                "--model",
                str(model_dir),
                "--config",
                "configs/serve/cpu.yaml",
                "--port",
                str(self.port),
                *overrides,
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.3)
        raise TimeoutError("server did not become ready")

    def stop(self) -> int:
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc
