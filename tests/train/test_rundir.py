"""One run per output directory: a second run in it is refused while the first lives, and a launcher killed
with -9 takes its ranks with it, so the rerun that resumes is the only writer."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from train.local_launch import launch_command, train_command

from .conftest import ROOT, launch, small_run_overrides


def processes_writing_to(out: Path) -> set[int]:
    """Pids whose command line names `out` (the launcher and its ranks)."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes():
                found.add(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_second_run_is_refused_and_a_killed_launcher_leaves_no_orphans(tmp_path, small_train_file):
    out = tmp_path / "run"
    overrides = small_run_overrides(small_train_file)
    with open(tmp_path / "first.log", "w") as log:
        launcher = subprocess.Popen(
            launch_command("configs/train/tiny-cpu.yaml", out, 2, overrides),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    try:
        manifest = out / "checkpoints/step-00000005/manifest.json"
        wait_for(manifest.is_file, 300, "the first checkpoint (step 5)")
        # the launcher's children; a rank's own short-lived children (a fork before exec) carry its command line
        ranks = {pid for pid in processes_writing_to(out) if parent(pid) == launcher.pid}
        assert len(ranks) == 2, ranks

        # the same command again while the first run trains: refused, naming the process that holds the directory
        second = subprocess.run(
            train_command("configs/train/tiny-cpu.yaml", out, overrides),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr[-2000:]
        last = second.stderr.strip().splitlines()[-1]
        holder = int(last.split("(process ")[1].split(")")[0])
        assert holder in ranks  # the first run's local main process
        assert last == (
            f"error: --output-dir: {out} is in use by another training run (process {holder}); "
            "let it finish or stop it, then rerun to resume"
        )

        launcher.send_signal(signal.SIGKILL)  # the launcher cannot pass anything on to its ranks
        launcher.wait()
        wait_for(lambda: not processes_writing_to(out), 30, "the ranks to exit after their launcher was killed")
    finally:
        for pid in processes_writing_to(out):
            os.kill(pid, signal.SIGKILL)

    # the rerun is alone in the directory: it resumes from a checkpoint the killed run completed, and finishes
    r = launch(out, overrides)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resumed from step-000000" in r.stdout + r.stderr
    assert (out / "model/model.safetensors").is_file()
