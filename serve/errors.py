"""Domain errors and the one place that maps them to HTTP statuses, with one error body shape.

Every 4xx/5xx the service writes is `{"error": {"code", "message", "field"?}}`: ours, FastAPI's request
validation, Starlette's 404/405, and the edge's 400/401/408/413/415/500/503 (serve/edge.py).
Exception text from the model or the runtime never reaches a client: it may quote patient findings.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


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
    """Not ready yet, or shutting down."""

    status, code, headers = 503, "not_ready", {"Retry-After": "5"}


class DeadlineExceeded(ServeError):
    status, code = 504, "timeout"


class ClientGone(ServeError):
    """The client closed its connection before its answer was ready; nothing is sent (nginx's 499 in the log)."""

    status, code = 499, "client_closed_request"


class InvalidField(ServeError):
    """A value the schema accepts but this server's limits or the decoding contract do not."""

    status, code = 422, "invalid_request"


class InputTooLong(ServeError):
    status, code = 422, "input_too_long"


class BatchFailed(ServeError):
    status, code = 500, "generation_failed"


def error_response(status: int, code: str, message: str, field: str | None = None, headers: dict | None = None):
    body = {"error": {"code": code, "message": message, **({"field": field} if field else {})}}
    return JSONResponse(body, status_code=status, headers=headers)


# pydantic error types of a value of the wrong JSON type, and what was expected instead
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a JSON object",
    "model_attributes_type": "a JSON object",
}


UNION_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def first_error(errors: list[dict]) -> dict:
    """The first error's field; for a field of several types (text_inputs: text or a list of texts), the error
    that goes deepest (`text_inputs.1: expected text`), not the one about the first type it is not."""
    if not errors:
        return {}
    root = errors[0].get("loc", ())[:2]
    same_field = [e for e in errors if e.get("loc", ())[:2] == root]
    return max(same_field, key=lambda e: len(e.get("loc", ())))


def validation_message(error: dict, known_fields: list[str]) -> tuple[int, str, str, str]:
    """(status, code, field, message) for one pydantic error about a request body."""
    loc = [str(x) for x in error.get("loc", ()) if x != "body" and not (str(x) in UNION_TAGS or "[" in str(x))]
    kind = error.get("type", "")
    if kind == "json_invalid":
        detail = (error.get("ctx") or {}).get("error", "")
        return (
            400,
            "invalid_json",
            "body",
            f"body: not valid JSON ({detail.removesuffix(' at')} at character {loc[0] if loc else '?'})",
        )
    field = ".".join(loc) or "body"
    if kind == "model_attributes_type" and field == "body":  # JSON, but not an object (the edge saw it was JSON)
        got = json.dumps(error.get("input"), default=str)[:80]
        return 422, "invalid_request", field, f"body: expected a JSON object, got {got}"
    if kind in EXPECTED or kind.endswith("_type"):
        got = json.dumps(error.get("input"), default=str)[:80]
        want = EXPECTED.get(kind, kind.removesuffix("_type"))
        message = (
            f"{field}: expected {want}, got {got} (types are strict: text, booleans and fractions are not converted)"
        )
        return 422, "invalid_request", field, message
    if kind == "extra_forbidden":
        return 422, "invalid_request", field, f"{field}: unknown parameter (known: {', '.join(known_fields)})"
    if kind == "missing":
        return 422, "invalid_request", field, f"{field}: required"
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return 422, "invalid_request", field, f"{field}: {msg}"


def install(app: FastAPI, body_fields: dict[str, list[str]]) -> None:
    """Map our errors, request validation and Starlette's HTTP errors onto the one body shape.

    `body_fields`: per route path, the parameters its body takes (named in the answer to an unknown one)."""

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, e: ServeError):
        return error_response(e.status, e.code, e.message, e.field, e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        error = first_error(list(e.errors()))
        status, code, field, message = validation_message(error, body_fields.get(request.url.path, []))
        return error_response(status, code, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, code, str(e.detail).lower(), headers=e.headers)
