"""The module-wide server for the serving tests."""

from __future__ import annotations

import pytest

from serve.local_server import Server


@pytest.fixture(scope="module")
def server(trained_model_dir, tmp_path_factory):
    s = Server(trained_model_dir, tmp_path_factory.mktemp("serve") / "server.log", "max_batch_size=8", "max_wait_ms=20")
    yield s
    s.stop()
