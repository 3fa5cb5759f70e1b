"""The FastAPI app: `create_app(model_dir, config)`; no module-level model.

Lifespan loads the model, warms it up, then marks the app ready; on shutdown it drains the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from radreport.generation import params_from_model
from radreport.modeling import load_model, load_tokenizer, read_meta, resolve_device, resolve_dtype
from radreport.prompt import findings_from_prompt, render
from serve import errors
from serve.config import ServeConfig
from serve.engine import BatchingEngine
from serve.errors import InputTooLong, InvalidField, NotReady, error_response
from serve.schemas import (
    Candidate,
    ErrorBody,
    ImpressionRequest,
    ImpressionResponse,
    InvocationsRequest,
    InvocationsResponse,
    Usage,
)
from serve.telemetry import Metrics

log = logging.getLogger("serve")
OPEN_PATHS = {"/healthz", "/readyz", "/ping", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"}
WARMUP_FINDINGS = "The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."


class EdgeMiddleware:
    """Request id, API key, body size (413) and UTF-8 (400) checks, timing and metrics, log lines without text."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        path, t0, status = scope["path"], time.perf_counter(), [500]

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        async def reply(resp):
            await resp(scope, receive, send_wrapped)

        size = 0
        try:
            if self.config.api_key and path not in OPEN_PATHS:
                given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
                if given != self.config.api_key:
                    return await reply(error_response(401, "unauthorized", "missing or wrong API key"))
            if scope["method"] == "POST":
                body = b""
                declared = headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
                    return await reply(
                        error_response(413, "body_too_large", f"body over {self.config.max_body_bytes} bytes")
                    )
                while True:
                    message = await receive()
                    body += message.get("body", b"")
                    if len(body) > self.config.max_body_bytes:
                        return await reply(
                            error_response(413, "body_too_large", f"body over {self.config.max_body_bytes} bytes")
                        )
                    if not message.get("more_body"):
                        break
                size = len(body)
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return await reply(error_response(400, "not_utf8", "request body is not UTF-8"))
                sent = False

                async def replay():
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                return await self.app(scope, replay, send_wrapped)
            return await self.app(scope, receive, send_wrapped)
        finally:
            seconds = time.perf_counter() - t0
            route = (
                path if path in {"/impression", "/invocations", "/ping", "/healthz", "/readyz", "/metrics"} else "other"
            )
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info(
                "id=%s %s %s status=%d bytes=%d seconds=%.3f", rid, scope["method"], path, status[0], size, seconds
            )


def create_app(model_dir: str, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    metrics = Metrics()
    model_name = Path(model_dir).name if Path(model_dir).is_dir() else model_dir

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.ready = False
        device = resolve_device(config.device)
        model = await asyncio.to_thread(load_model, model_dir, resolve_dtype(config.dtype, device), device)
        tokenizer, meta = load_tokenizer(model_dir), read_meta(model_dir)
        app.state.model, app.state.tokenizer, app.state.meta = model, tokenizer, meta
        app.state.engine = BatchingEngine(model, tokenizer, meta, config, metrics)
        await app.state.engine.start()
        if config.warmup:
            await app.state.engine.submit(WARMUP_FINDINGS, "", params_from_model(model), "warmup")
        app.state.ready = True
        log.info("ready: model=%s device=%s dtype=%s", model_name, device, next(model.parameters()).dtype)
        yield
        app.state.ready = False
        await app.state.engine.drain(config.drain_timeout_s)

    app = FastAPI(
        title="Radiology impression service",
        version="0.1.0",
        lifespan=lifespan,
        responses={k: {"model": ErrorBody} for k in (400, 401, 413, 422, 503, 504)},
    )
    errors.install(app)
    app.add_middleware(EdgeMiddleware, config=config, metrics=metrics)

    def engine(request: Request) -> BatchingEngine:
        if not getattr(request.app.state, "ready", False):
            raise NotReady("model is loading")
        return request.app.state.engine

    def bounded(request: Request, field_values: dict):
        p = params_from_model(request.app.state.model, **field_values)
        limits = {
            "num_beams": config.max_num_beams,
            "max_new_tokens": config.max_new_tokens_limit,
            "num_return_sequences": config.max_return_sequences,
        }
        for k, limit in limits.items():
            if getattr(p, k) > limit:
                raise InvalidField(f"{k}: must be <= {limit} on this server", k)
        problems = p.check()
        if problems:
            raise InvalidField(problems[0], problems[0].split(":")[0])
        return p

    def check_length(request: Request, findings: str, background: str) -> None:
        if config.truncate_long_input:
            return
        meta = request.app.state.meta
        n = len(request.app.state.tokenizer(render(findings, meta.prompt_template, background))["input_ids"])
        if n > meta.max_source_tokens:
            raise InputTooLong(f"findings: {n} tokens, the model reads at most {meta.max_source_tokens}", "findings")

    @app.post("/impression", response_model=ImpressionResponse)
    async def impression(body: ImpressionRequest, request: Request) -> ImpressionResponse:
        eng = engine(request)
        p = bounded(
            request,
            {
                "num_beams": body.num_beams,
                "max_new_tokens": body.max_new_tokens,
                "num_return_sequences": body.num_return_sequences,
                "length_penalty": body.length_penalty,
            },
        )
        check_length(request, body.findings, body.background or "")
        g = await eng.submit(body.findings, body.background or "", p, request.state.request_id)
        return ImpressionResponse(
            impression=g.candidates[0][0],
            candidates=[Candidate(text=t, score=s) for t, s in g.candidates],
            model=model_name,
            usage=Usage(input_tokens=g.input_tokens, output_tokens=g.output_tokens),
            truncated=g.truncated,
        )

    @app.post("/invocations", response_model=InvocationsResponse)
    async def invocations(body: InvocationsRequest, request: Request) -> InvocationsResponse:
        eng = engine(request)
        p = bounded(
            request,
            {
                "num_beams": body.num_beams,
                "max_new_tokens": body.max_length,
                "num_return_sequences": body.num_return_sequences,
            },
        )
        items = [body.text_inputs] if isinstance(body.text_inputs, str) else body.text_inputs
        findings = [findings_from_prompt(t) for t in items]
        for f in findings:
            check_length(request, f, "")
        outs = await asyncio.gather(*(eng.submit(f, "", p, request.state.request_id) for f in findings))
        texts = [[t for t, _ in g.candidates] for g in outs]
        if isinstance(body.text_inputs, str):
            return InvocationsResponse(generated_texts=texts[0])
        return InvocationsResponse(generated_texts=[t[0] for t in texts] if p.num_return_sequences == 1 else texts)

    @app.get("/ping")
    async def ping(request: Request):
        """SageMaker hosting health check: 200 once the model is loaded and warm."""
        if not getattr(request.app.state, "ready", False):
            return Response(status_code=503)
        return Response(status_code=200)

    @app.get("/healthz")
    async def healthz():
        """Alive (the process answers), whether or not the model is ready."""
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz(request: Request):
        if not getattr(request.app.state, "ready", False):
            return error_response(503, "not_ready", "model is loading or draining", headers={"Retry-After": "5"})
        return {"status": "ready", "model": model_name}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
