"""No Docker engine here: lint the Dockerfiles and check that every path they copy exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile):
    hadolint = Path(sys.executable).parent / "hadolint"
    r = subprocess.run(
        [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copied_paths_exist_and_entrypoints_are_executable(dockerfile):
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), re.MULTILINE)
    assert copies
    for sources in copies:
        for src in sources.split():
            assert (ROOT / src).exists(), f"{dockerfile}: COPY {src} does not exist"
    script = dockerfile.parent / dockerfile.parent.name
    assert script.is_file() and script.stat().st_mode & 0o111
