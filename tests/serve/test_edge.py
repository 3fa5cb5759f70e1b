"""The edge middleware around a real ASGI app that fails: an unexpected error is one log line naming where,
never its text, and a 500 in the one error shape."""

import asyncio
import json
import logging

from serve.app import ServiceState
from serve.config import ServeConfig
from serve.edge import EdgeMiddleware, log_safe
from serve.telemetry import Metrics

SECRET = "findings that must not reach a log"


async def failing_app(scope, receive, send):
    raise RuntimeError(SECRET)


def call(app, path="/impression", method="GET", headers=()):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers), "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent


def test_an_unhandled_error_is_a_500_in_the_error_shape_and_one_log_line(caplog):
    service = ServiceState(phase="ready")
    edge = EdgeMiddleware(failing_app, ServeConfig(), Metrics(), service)
    with caplog.at_level(logging.INFO, logger="serve"):
        sent = call(edge)
    start, body = sent[0], json.loads(sent[1]["body"])
    assert start["status"] == 500 and body == {"error": {"code": "internal", "message": "internal error"}}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "type=RuntimeError at " in errors[0] and "test_edge.py:" in errors[0]
    assert SECRET not in caplog.text and "Traceback" not in caplog.text
    assert service.in_flight == 0


def test_log_safe_keeps_one_printable_token():
    assert log_safe("/x\r\nFORGED line") == "/x%0D%0AFORGED%20line"
    assert log_safe("/impression") == "/impression"
    assert log_safe("/é\t") == "/%C3%A9%09"


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_bearer_scheme_is_case_insensitive_and_the_key_is_not():
    edge = EdgeMiddleware(ok_app, ServeConfig(api_key="s3cret"), Metrics(), ServiceState(phase="ready"))

    def status(value: str) -> int:
        return call(edge, headers=[(b"authorization", value.encode())])[0]["status"]

    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert status(f"{scheme} s3cret") == 200, scheme
        assert status(f"{scheme}  s3cret ") == 200, scheme
        assert status(f"{scheme} S3CRET") == 401, scheme
    assert status("Basic s3cret") == 401 and status("") == 401 and status("bearer") == 401


def test_every_key_a_request_sends_must_be_the_key():
    """With both headers, a right X-API-Key does not excuse a wrong Authorization (nor the reverse)."""
    edge = EdgeMiddleware(ok_app, ServeConfig(api_key="s3cret"), Metrics(), ServiceState(phase="ready"))

    def status(*headers) -> int:
        return call(edge, headers=[(k.encode(), v.encode()) for k, v in headers])[0]["status"]

    right_key, right_bearer = ("x-api-key", "s3cret"), ("authorization", "Bearer s3cret")
    assert status(right_key) == 200 and status(right_bearer) == 200 and status(right_key, right_bearer) == 200
    assert status(right_key, ("authorization", "Bearer wrong")) == 401
    assert status(("x-api-key", "wrong"), right_bearer) == 401
    assert status(("x-api-key", ""), right_bearer) == 401  # an empty key sent is a wrong key, not no key
    assert status() == 401


def test_a_key_header_sent_twice_must_carry_the_key_both_times_and_other_schemes_are_not_keys():
    edge = EdgeMiddleware(ok_app, ServeConfig(api_key="s3cret"), Metrics(), ServiceState(phase="ready"))

    def status(*headers) -> int:
        return call(edge, headers=[(k.encode(), v.encode()) for k, v in headers])[0]["status"]

    for first, second in [("nope", "s3cret"), ("s3cret", "nope")]:  # either order: refused
        assert status(("x-api-key", first), ("x-api-key", second)) == 401
        assert status(("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}")) == 401
    assert status(("authorization", "Basic dXNlcjpwdw=="), ("x-api-key", "s3cret")) == 200  # a proxy's own auth
    assert status(("authorization", "s3cret")) == 200  # a bare key, as before
    assert status(("authorization", "Basic s3cret")) == 401
