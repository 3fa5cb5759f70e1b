"""bench/scale_rehearsal.py end to end at the tiny shape: two real launches, a resume, an export, the last line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(r"rehearsal: peak (\d+\.\d) GiB measured, (\d+\.\d) GiB planned per rank")


def test_tiny_rehearsal(tmp_path):
    out = tmp_path / "rehearsal.json"
    cmd = [sys.executable, "bench/scale_rehearsal.py", "--shape", "tiny", "--batch", "4", "--steps", "2"]
    cmd += ["--out-dir", str(tmp_path / "runs"), "--json", str(out), "--keep"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    match = LAST_LINE.fullmatch(last)
    assert match, last
    result = json.loads(out.read_text())
    measured, planned = float(match[1]), float(match[2])
    assert measured == round(result["peak_gib_measured"], 1) and planned == round(result["peak_gib_planned"], 1)
    # both ranks were seen in both runs, and they agree with the plan within 25%
    assert set(result["peak_gib_by_rank"]["run1"]) == set(result["peak_gib_by_rank"]["run2"]) == {"0", "1"}
    assert 0.75 <= result["peak_gib_measured"] / result["peak_gib_planned"] <= 1.25
    run = tmp_path / "runs/tiny_b4/run"
    assert "interrupted on purpose after step 1" in (tmp_path / "runs/tiny_b4/train.log").read_text()
    assert "resumed from step-00000001" in (tmp_path / "runs/tiny_b4/train.log").read_text()
    assert result["checkpoint_gb"]["step"] > 0 and result["checkpoint_gb"]["epoch"] > 0
    assert (run / "model/model.safetensors").is_file()
    assert result["export_gb"]["measured"] > 0
    assert len(result["reload"]["generated"]) == 2
    assert set(result["export_head"]) == {"lm_head_saved", "lm_head_differs_from_shared"}
