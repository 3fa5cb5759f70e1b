"""The FastAPI app around one loaded model: `create_app(served, config)`; no module-level model.

A request passes, outside in: the edge middleware (serve/edge.py: request id, draining, API key, body
limits, one log line), FastAPI's validation (serve/schemas.py, strict types), a route (serve/routes.py),
the batching engine (serve/engine.py) and the one generation helper (radreport/generation.py). Every
error on the way has one body shape (serve/errors.py).

Life cycle: the model is loaded and warmed up before the server listens (serve/model.py); the lifespan
starts the engine and marks the service ready. On SIGTERM `drain` runs (serve/__main__.py calls it):
readiness fails and new requests get 503 at once, requests in flight get drain_timeout_s to finish, the
rest get 503, then the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from serve import errors
from serve.config import ServeConfig
from serve.edge import EdgeMiddleware
from serve.engine import BatchingEngine
from serve.model import ServedModel
from serve.routes import generation_routes, probe_routes
from serve.schemas import ErrorBody, ImpressionRequest, InvocationsRequest
from serve.telemetry import Metrics

log = logging.getLogger("serve")


@dataclass
class ServiceState:
    """What the edge, the routes and the drain share."""

    phase: str = "starting"
    """starting -> ready -> draining."""
    in_flight: int = 0
    """HTTP requests being handled now."""
    engine: BatchingEngine | None = None


def create_app(served: ServedModel, config: ServeConfig | None = None) -> FastAPI:
    """The service for `served` under `config`: edge middleware, error handlers, routes, lifespan."""
    config = config or ServeConfig()
    metrics, service = Metrics(), ServiceState()

    def run_batch(jobs):
        return served.generate([j.findings for j in jobs], jobs[0].params, [j.background for j in jobs])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.engine = BatchingEngine(run_batch, config, metrics)
        await service.engine.start()
        service.phase = "ready"
        log.info("ready: model=%s", served.name)
        yield
        service.engine.close("server shut down before this request was answered")

    app = FastAPI(
        title="Radiology impression service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if config.docs else None,  # the docs pages load their scripts from a CDN
        redoc_url="/redoc" if config.docs else None,
        responses={k: {"model": ErrorBody} for k in (400, 401, 408, 413, 422, 503, 504)},
    )
    app.state.service = service
    errors.install(
        app,
        {
            "/impression": sorted(ImpressionRequest.model_fields),
            "/invocations": sorted(InvocationsRequest.model_fields),
        },
    )
    app.add_middleware(EdgeMiddleware, config=config, metrics=metrics, service=service)
    app.include_router(generation_routes(served, config, service))
    app.include_router(probe_routes(service, metrics, served.name))
    return app


async def drain(app: FastAPI, timeout: float) -> None:
    """Readiness off and new requests 503 now; wait up to `timeout` for the requests in flight, then
    answer what is left with 503 (its batch, if running, is abandoned)."""
    service: ServiceState = app.state.service
    service.phase = "draining"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    log.info("draining: up to %gs for %d requests in flight", timeout, service.in_flight)
    while (service.in_flight > 0 or (service.engine and not service.engine.idle)) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if service.engine is not None:
        service.engine.close("server shut down before this request was answered")
    settle_until = loop.time() + 0.5  # let the routes send their 503s
    while service.in_flight > 0 and loop.time() < settle_until:
        await asyncio.sleep(0.02)
    log.info("drained: %d requests still in flight", service.in_flight)
