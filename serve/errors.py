"""Domain errors and the one place that maps them to HTTP statuses, with one error body shape.

Exception text from the model or the runtime never reaches a client: it may quote patient findings.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger("serve")


class ServeError(Exception):
    status = 500
    code = "internal"
    headers: dict = {}

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.message, self.field = message or self.code, field


class QueueFull(ServeError):
    status, code, headers = 503, "overloaded", {"Retry-After": "1"}


class NotReady(ServeError):
    status, code, headers = 503, "not_ready", {"Retry-After": "5"}


class DeadlineExceeded(ServeError):
    status, code = 504, "timeout"


class InvalidField(ServeError):
    """A value the schema accepts but this server's limits do not (e.g. num_beams above max_num_beams)."""

    status, code = 422, "invalid_request"


class InputTooLong(ServeError):
    status, code = 422, "input_too_long"


class Unauthorized(ServeError):
    status, code = 401, "unauthorized"


class BatchFailed(ServeError):
    status, code = 500, "generation_failed"


def error_response(status: int, code: str, message: str, field: str | None = None, headers: dict | None = None):
    body = {"error": {"code": code, "message": message, **({"field": field} if field else {})}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError):
        return error_response(e.status, e.code, e.message, e.field, e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        field = ".".join(loc) or "body"
        msg = first.get("msg", "invalid request")
        return error_response(422, "invalid_request", f"{field}: {msg}", field)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        log.exception("unhandled error id=%s", getattr(request.state, "request_id", "-"))
        return error_response(500, "internal", "internal error")
