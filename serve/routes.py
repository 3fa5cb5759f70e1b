"""The routes: POST /impression and the SageMaker pair (/invocations, /ping), health, readiness, metrics.

A generation route checks its parameters against the decoding contract and this server's limits, checks
the input length off the event loop, queues its jobs in the engine (all or none) and waits for them,
watching for the client to go away meanwhile.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from radreport.generation import GenerationParams, encode
from serve.config import ServeConfig
from serve.errors import InputTooLong, InvalidField, NotReady, error_response
from serve.model import ServedModel
from serve.schemas import (
    Candidate,
    ImpressionRequest,
    ImpressionResponse,
    InvocationsRequest,
    InvocationsResponse,
    Usage,
)
from serve.telemetry import Metrics


async def client_gone(request: Request) -> None:
    """Returns once the client has disconnected (ASGI http.disconnect); the body was read already."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def generation_routes(served: ServedModel, config: ServeConfig, service) -> APIRouter:
    router = APIRouter()
    limits = config.limits()

    def params_for(values: dict, max_new_tokens: int | None, name_of_max: str) -> GenerationParams:
        """The model's defaults, the request's values, then the contract's checks and this server's limits."""
        p = served.default_params(**values, max_new_tokens=max_new_tokens)
        for k, limit in limits.items():  # first: a value over the limit gets this message however far over it is
            if getattr(p, k) > limit:
                name = name_of_max if k == "max_new_tokens" else k
                raise InvalidField(f"{name}: must be <= {limit} on this server", name)
        problems = p.check()
        if problems:
            raise InvalidField(problems[0], problems[0].split(":")[0])
        return p

    def check_lengths(findings: list[str], backgrounds: list[str], field: str) -> None:
        if config.truncate_long_input:
            return
        _, lengths = encode(served.tokenizer, served.meta, findings, backgrounds)
        limit = served.meta.max_source_tokens
        for i, n in enumerate(lengths):
            if n > limit:
                where = field if len(lengths) == 1 else f"{field}.{i}"
                raise InputTooLong(f"{where}: {n} tokens, the model reads at most {limit}", where)

    async def run(request: Request, findings: list[str], backgrounds: list[str], params, field: str):
        if service.phase != "ready" or service.engine is None:
            raise NotReady("server is not ready")
        if len(findings) > config.max_queue:
            raise InvalidField(f"{field}: {len(findings)} inputs, this server queues at most {config.max_queue}", field)
        await asyncio.to_thread(check_lengths, findings, backgrounds, field)  # tokenising: off the event loop
        jobs = service.engine.submit(list(zip(findings, backgrounds, strict=True)), params, request.state.request_id)
        return await service.engine.results(jobs, client_gone(request))

    @router.post("/impression", response_model=ImpressionResponse)
    async def impression(body: ImpressionRequest, request: Request) -> ImpressionResponse:
        """Findings in, impression out, with every candidate and its score."""
        p = params_for(body.generation_values(), body.max_new_tokens, "max_new_tokens")
        findings, background = body.prompt_parts()
        (g,) = await run(request, [findings], [background], p, "findings")
        return ImpressionResponse(
            impression=g.candidates[0][0],
            candidates=[Candidate(text=t, score=s) for t, s in g.candidates],
            model=served.name,
            usage=Usage(input_tokens=g.input_tokens, output_tokens=g.output_tokens),
            truncated=g.truncated,
        )

    @router.post("/invocations", response_model=InvocationsResponse)
    async def invocations(body: InvocationsRequest, request: Request) -> InvocationsResponse:
        """SageMaker hosting / JumpStart text2text: a prompt that already holds the instruction is unwrapped."""
        p = params_for(body.generation_values(), body.max_length, "max_length")
        findings, backgrounds = zip(*body.prompt_parts(), strict=True)
        outs = await run(request, list(findings), list(backgrounds), p, "text_inputs")
        texts = [[t for t, _ in g.candidates] for g in outs]
        if isinstance(body.text_inputs, str):
            return InvocationsResponse(generated_texts=texts[0])
        return InvocationsResponse(generated_texts=[t[0] for t in texts] if p.num_return_sequences == 1 else texts)

    return router


def probe_routes(service, metrics: Metrics, model_name: str) -> APIRouter:
    router = APIRouter()

    @router.get("/ping")
    async def ping():
        """SageMaker hosting health check: 200 while ready, 503 while starting or draining."""
        return Response(status_code=200 if service.phase == "ready" else 503)

    @router.get("/healthz")
    async def healthz():
        """Alive (the process answers), whether or not it is ready."""
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz():
        """200 while taking requests; 503 (with Retry-After) while starting or draining."""
        if service.phase != "ready":
            return error_response(503, "not_ready", f"server is {service.phase}", headers={"Retry-After": "5"})
        return {"status": "ready", "model": model_name}

    @router.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return router
