"""The module-wide server for the serving tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_process import ROOT, Server  # noqa: E402,F401

@pytest.fixture(scope="module")
def server(trained_model_dir, tmp_path_factory):
    s = Server(trained_model_dir, tmp_path_factory.mktemp("serve") / "server.log", "max_batch_size=8", "max_wait_ms=20")
    yield s
    s.stop()
