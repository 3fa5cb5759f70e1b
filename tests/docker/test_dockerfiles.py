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


def test_the_build_context_is_the_project_and_nothing_else():
    """`COPY . ./` copies what .dockerignore lets in: it must leave out everything (.venv, data/, runs/ are
    gigabytes) and let back in exactly the packages pyproject.toml installs, their configs and docker/."""
    import tomllib

    rules = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    assert rules[0] == "*"
    allowed = {r[1:] for r in rules if r.startswith("!")}
    for path in allowed:
        assert (ROOT / path).exists(), f".dockerignore lets in {path}, which does not exist"
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in find["include"]}
    assert allowed == packages | {"pyproject.toml", "README.md", "configs", "docker"}
    for dockerfile in DOCKERFILES:
        copies = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile.read_text(), re.MULTILINE)
        assert "." in copies, f"{dockerfile}: the project is copied as the context, `COPY . ./`"
        for sources in copies:
            for src in sources.split():
                assert src == "." or src.split("/")[0] in allowed, f"{dockerfile}: COPY {src} is outside the context"
