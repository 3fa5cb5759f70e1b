"""The edge: what every HTTP request passes before and after the routes.

In order: a request id (the client's `x-request-id` only if it is `[A-Za-z0-9._:-]{1,64}`), 503 while
draining, the API key (constant-time compare), the body (413 over max_body_bytes, 408 if not received
within body_timeout_s, 415 if not sent as JSON, 400 if not UTF-8), then the route; an unhandled error
becomes one log line and a 500 in the one error shape. One log line per request: id, method, the path
percent-escaped (a path with %0d%0a cannot forge a line), status, body size, seconds; never the body.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import traceback
import uuid
from urllib.parse import quote

from serve.config import ServeConfig
from serve.errors import error_response
from serve.telemetry import Metrics

log = logging.getLogger("serve")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Probes and metrics: open without a key, answered while draining (readiness says 503 itself).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/ping", "/metrics"})
DOC_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
JSON_ROUTES = frozenset({"/impression", "/invocations"})  # their bodies are JSON objects
ROUTES = frozenset({*JSON_ROUTES, *OPEN_PATHS})
# An answer sent before the whole body was read ends the connection: the rest of the body is not a next request.
CLOSE = {"Connection": "close"}


def given_keys(raw_headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request carries, every copy of each header: `X-API-Key: KEY`, `Authorization: Bearer KEY` with
    the scheme in any case (auth schemes are case-insensitive, RFC 7235), or a bare `Authorization: KEY`. Another
    scheme (`Basic ...`, e.g. added by a proxy) carries no key of ours."""
    keys = []
    for name, value in raw_headers:
        name = name.lower()
        if name == b"x-api-key":
            keys.append(value)
        elif name == b"authorization":
            scheme, space, credentials = value.strip().partition(b" ")
            if not space:
                keys.append(scheme)
            elif scheme.lower() == b"bearer":
                keys.append(credentials.strip())
    return keys


def key_is_right(raw_headers: list[tuple[bytes, bytes]], key: bytes) -> bool:
    """Every key the request sends is the right one: a right key beside a wrong one (another header, or the same
    header twice) is refused, not decided by which copy is read first. Compared in constant time."""
    keys = given_keys(raw_headers)
    return bool(keys) and all(hmac.compare_digest(k, key) for k in keys)


def is_json(content_type: str) -> bool:
    """application/json, with parameters (charset) or without, or another application/*+json: what FastAPI
    parses as JSON. A body sent otherwise (text/plain, a form, no content-type) is not read as JSON at all."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def log_safe(path: str) -> str:
    """The path as one printable token: control characters, spaces and non-ASCII percent-escaped."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


class ClientLeft(Exception):
    """The client disconnected while sending its body."""


class EdgeMiddleware:
    def __init__(self, app, config: ServeConfig, metrics: Metrics, service):
        """`service`: the app's ServiceState (phase, in-flight count)."""
        self.app, self.config, self.metrics, self.service = app, config, metrics, service
        self.key = config.api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given_id = headers.get("x-request-id", "")
        rid = given_id if REQUEST_ID.fullmatch(given_id) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        path, t0, status, size = scope["path"], time.perf_counter(), [0], [0]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        self.service.in_flight += 1
        try:
            await self._handle(scope, receive, send_with_id, headers, path, size)
        except Exception as e:  # noqa: BLE001  one line, no exception text (it may quote findings), one error shape
            frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f"{frame.filename}:{frame.lineno}" if frame else "?"
            log.error("unhandled error id=%s type=%s at %s", rid, type(e).__name__, where)
            if not status[0]:
                await error_response(500, "internal", "internal error")(scope, receive, send_with_id)
        finally:
            self.service.in_flight -= 1
            seconds = time.perf_counter() - t0
            route = path if path in ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info(
                "id=%s %s %s status=%d bytes=%d seconds=%.3f",
                rid,
                scope["method"],
                log_safe(path),
                status[0],
                size[0],
                seconds,
            )

    async def _handle(self, scope, receive, send, headers: dict, path: str, size: list[int]) -> None:
        async def reply(status: int, code: str, message: str, **headers_out):
            await error_response(status, code, message, headers=headers_out or None)(scope, receive, send)

        if self.service.phase == "draining" and path not in OPEN_PATHS:
            return await reply(503, "not_ready", "server is shutting down", **{"Retry-After": "5"})
        if self.key and path not in OPEN_PATHS:
            if not key_is_right(scope["headers"], self.key):
                return await reply(401, "unauthorized", "missing or wrong API key")
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        limit = self.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await reply(413, "body_too_large", f"body over {limit} bytes", **CLOSE)
        try:
            body = await asyncio.wait_for(self._read_body(receive, limit), self.config.body_timeout_s)
        except asyncio.TimeoutError:
            return await reply(
                408, "body_timeout", f"request body not received within {self.config.body_timeout_s:g} s", **CLOSE
            )
        except ClientLeft:  # the client went away mid-body: nobody to answer
            return
        if body is None:
            return await reply(413, "body_too_large", f"body over {limit} bytes", **CLOSE)
        size[0] = len(body)
        if path in JSON_ROUTES and not is_json(headers.get("content-type", "")):
            sent = headers.get("content-type", "")
            return await reply(
                415,
                "unsupported_media_type",
                "body: send a JSON object with content-type: application/json "
                f"({'no content-type was sent' if not sent else f'got content-type: {sent[:100]}'})",
            )
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return await reply(400, "not_utf8", "request body is not UTF-8")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: http.disconnect when the client goes (routes watch for it)

        await self.app(scope, replay, send)

    @staticmethod
    async def _read_body(receive, limit: int) -> bytes | None:
        """The whole body, or None past `limit` bytes."""
        chunks, n = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientLeft
            chunk = message.get("body", b"")
            n += len(chunk)
            if n > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)
