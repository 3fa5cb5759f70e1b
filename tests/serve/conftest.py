"""The serving tests' models and the module-wide server."""

from __future__ import annotations

import pytest

from serve.local_server import Server


@pytest.fixture(scope="module")
def server(varied_model_dir, tmp_path_factory):
    s = Server(varied_model_dir, tmp_path_factory.mktemp("serve") / "server.log", "max_wait_ms=20")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def error_shape():
    return _error_shape


def _error_shape(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    """The one error body: {"error": {"code", "message", "field"?}} and nothing else; returns the error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]) <= {"code", "message", "field"}, body
    assert body["error"]["message"], body
    if code:
        assert body["error"]["code"] == code, body
    if field:
        assert body["error"]["field"] == field, body
    return body["error"]
