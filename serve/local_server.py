"""A real `python -m serve` child process on loopback, ready when it answers /readyz (tests, benchmarks)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ are read from it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *overrides: str,
        config: str = "configs/serve/cpu.yaml",
        env: dict | None = None,
        args: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        command = [sys.executable, "-m", "serve", "--model", str(model_dir), "--config", config]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), *args, *overrides],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        raise TimeoutError("server did not become ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.log.close()
        return rc

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics, e.g. metric("impression_jobs_dropped_total", 'reason="timeout"'); 0 if absent."""
        want = f"{name}{{{labels}}}" if labels else name
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            key, _, value = line.rpartition(" ")
            if key == want:
                return float(value)
        return 0.0

    def peak_rss_bytes(self) -> int:
        """The server process's peak resident memory so far (Linux: VmHWM)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
