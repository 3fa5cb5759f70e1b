"""One batching engine behind every route.

Requests wait in one queue. The worker takes the oldest, gathers up to max_batch_size more with the
same generation parameters (for at most max_wait_ms), and runs one beam search for all of them in a
worker thread, so the event loop keeps accepting requests. Different parameters are never mixed in a
batch. A failing batch fails only its own requests. Requests past their deadline are dropped before
they cost any compute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from radreport.generation import Generated, GenerationParams, generate
from serve.errors import BatchFailed, DeadlineExceeded, NotReady, QueueFull

log = logging.getLogger("serve.engine")


@dataclass
class Job:
    findings: str
    background: str
    params: GenerationParams
    deadline: float
    request_id: str
    future: asyncio.Future = field(default=None)


class BatchingEngine:
    def __init__(self, model, tokenizer, meta, config, metrics):
        self.model, self.tokenizer, self.meta, self.config, self.metrics = model, tokenizer, meta, config, metrics
        self.pending: list[Job] = []
        self.wakeup = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.closing = False
        self.busy = False
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def submit(self, findings: str, background: str, params: GenerationParams, request_id: str) -> Generated:
        if self.closing:
            raise NotReady("server is shutting down")
        if len(self.pending) >= self.config.max_queue:
            raise QueueFull("queue is full, retry later")
        loop = asyncio.get_running_loop()
        job = Job(
            findings, background, params, loop.time() + self.config.request_timeout_s, request_id, loop.create_future()
        )
        self.pending.append(job)
        self.metrics.queue_depth.set(len(self.pending))
        self.wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            if job in self.pending:  # not started: drop its work
                self.pending.remove(job)
                self.metrics.queue_depth.set(len(self.pending))
            raise DeadlineExceeded(f"no answer within {self.config.request_timeout_s:g} s") from None

    def _take_batch(self, now: float) -> list[Job]:
        first = self.pending[0]
        batch = [j for j in self.pending if j.params == first.params][: self.config.max_batch_size]
        for j in batch:
            self.pending.remove(j)
        self.metrics.queue_depth.set(len(self.pending))
        live = []
        for j in batch:
            if j.deadline <= now or j.future.done():
                if not j.future.done():
                    j.future.set_exception(DeadlineExceeded("deadline passed while queued"))
            else:
                live.append(j)
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                if self.closing:
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            # give the first request max_wait_ms to gather company with the same parameters
            first = self.pending[0]
            gather_until = loop.time() + self.config.max_wait_ms / 1000
            while loop.time() < gather_until and not self.closing:
                if sum(1 for j in self.pending if j.params == first.params) >= self.config.max_batch_size:
                    break
                await asyncio.sleep(0.001)
            batch = self._take_batch(loop.time())
            if not batch:
                continue
            self.busy = True
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor,
                    generate,
                    self.model,
                    self.tokenizer,
                    self.meta,
                    [j.findings for j in batch],
                    batch[0].params,
                    [j.background for j in batch],
                )
            except Exception as e:  # noqa: BLE001  one failing batch fails only its own requests
                log.error(
                    "batch of %d failed: %s (ids %s)", len(batch), type(e).__name__, [j.request_id for j in batch]
                )
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(BatchFailed("generation failed for this batch"))
                continue
            finally:
                self.busy = False
            self.metrics.batch_size.observe(len(batch))
            log.info(
                "batch size=%d beams=%d seconds=%.3f ids=%s",
                len(batch),
                batch[0].params.num_beams,
                time.perf_counter() - t0,
                ",".join(j.request_id for j in batch),
            )
            for j, r in zip(batch, results, strict=True):
                self.metrics.input_tokens.inc(r.input_tokens)
                self.metrics.output_tokens.inc(r.output_tokens)
                if not j.future.done():
                    j.future.set_result(r)

    async def drain(self, timeout: float) -> None:
        """Stop taking requests; finish the queued and running ones (up to `timeout`)."""
        self.closing = True
        self.wakeup.set()
        if self.task:
            try:
                await asyncio.wait_for(self.task, timeout)
            except asyncio.TimeoutError:
                self.task.cancel()
        self.executor.shutdown(wait=False)
