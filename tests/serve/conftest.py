"""The serving tests' models and the module-wide server."""

from __future__ import annotations

import pytest
import torch

from serve.local_server import Server


@pytest.fixture(scope="session")
def varied_model_dir(trained_model_dir, tmp_path_factory):
    """The one-epoch tiny model with seeded noise on its weights, saved as a model directory.

    The trained tiny model answers every study alike; with the noise its answers depend on the findings and end
    at different lengths, which is what batching must not change (padding after a short answer)."""
    import shutil

    from radreport.modeling import load_model

    out = tmp_path_factory.mktemp("varied") / "model"
    shutil.copytree(trained_model_dir, out)
    model = load_model(trained_model_dir)
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=noise) * 0.15 * p.std())
    model.save_pretrained(out)
    return out


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
