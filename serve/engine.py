"""One batching engine behind every route.

Jobs (one per findings text) wait in one bounded queue. The worker takes the oldest, gathers more with the
same generation parameters for at most max_wait_ms, up to max_batch_sequences decoder sequences (a job
holds num_beams of them, or its samples), and runs the batch on one generation thread, so the event loop
keeps accepting requests. Different parameters are never mixed in a batch. A failing batch fails only its
own jobs.

No work for clients that are gone: a request whose client disconnects, or whose deadline passes, has its
queued jobs removed before they cost any compute; if its batch is already running, the batch runs on
undisturbed for its other jobs and the result is dropped. A request's jobs are admitted all together or
not at all.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from radreport.generation import Generated, GenerationParams
from serve.errors import BatchFailed, ClientGone, DeadlineExceeded, NotReady, QueueFull

log = logging.getLogger("serve.engine")


@dataclass(eq=False)
class Job:
    findings: str
    background: str
    params: GenerationParams
    request_id: str
    deadline: float
    future: asyncio.Future
    dropped: bool = False
    """Its client is gone (or its deadline passed): not computed if still queued, result ignored if running."""

    @property
    def cost(self) -> int:
        return self.params.sequences_per_request()


RunBatch = Callable[[list[Job]], list[Generated]]


class GenerationThread:
    """The one thread that runs batches, one at a time (the model is not shared between threads).

    A daemon thread, not a ThreadPoolExecutor: the executor's threads are joined at interpreter exit, so a
    batch still running when the drain timeout passes would hold the process past it."""

    def __init__(self):
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="generate", daemon=True).start()

    def run(self, fn: RunBatch, batch: list[Job]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.inbox.put((loop, done, fn, batch))
        return done

    def stop(self) -> None:
        """The thread ends after the batch it is running, if any."""
        self.inbox.put(None)

    def _serve(self) -> None:
        while (work := self.inbox.get()) is not None:
            loop, done, fn, batch = work
            try:
                result, error = fn(batch), None
            except Exception as e:  # noqa: BLE001  handed to the waiting coroutine
                result, error = None, e
            try:
                loop.call_soon_threadsafe(_settle, done, result, error)
            except RuntimeError:  # the loop is closed: the process is exiting
                return


def _settle(done: asyncio.Future, result, error) -> None:
    if not done.done():
        done.set_exception(error) if error else done.set_result(result)


class BatchingEngine:
    def __init__(self, run_batch: RunBatch, config, metrics):
        """`run_batch(jobs)` computes one batch (all jobs share params) and returns one Generated per job."""
        self.run_batch, self.config, self.metrics = run_batch, config, metrics
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self.closed = False
        self.arrived = asyncio.Event()
        self.thread = GenerationThread()
        self.task: asyncio.Task | None = None

    # ---- the request side -------------------------------------------------------------------

    def submit(self, items: list[tuple[str, str]], params: GenerationParams, request_id: str) -> list[Job]:
        """Queue one job per (findings, background), all of them or none (QueueFull, NotReady)."""
        if self.closed:
            raise NotReady("server is shutting down")
        if len(self.pending) + len(items) > self.config.max_queue:
            raise QueueFull("queue is full, retry later")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.request_timeout_s
        jobs = [Job(f, b, params, request_id, deadline, loop.create_future()) for f, b in items]
        self.pending.extend(jobs)
        self.metrics.queue_depth.set(len(self.pending))
        self.arrived.set()
        return jobs

    async def results(self, jobs: list[Job], client_gone: Awaitable[None] | None = None) -> list[Generated]:
        """Wait for every job's answer; if the client goes first, or the deadline passes, drop the jobs."""
        every = asyncio.ensure_future(asyncio.wait([j.future for j in jobs]))
        gone = asyncio.ensure_future(client_gone) if client_gone is not None else None
        timeout = max(0.0, jobs[0].deadline - asyncio.get_running_loop().time())
        try:
            finished, _ = await asyncio.wait(
                [every, gone] if gone else [every], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (every, gone):
                if t is not None and not t.done():
                    t.cancel()
        if every in finished:
            errors = [j.future.exception() for j in jobs]  # each retrieved: none is left to warn at exit
            first_error = next((e for e in errors if e is not None), None)
            if first_error is not None:
                raise first_error  # BatchFailed, or NotReady when the drain ended first
            return [j.future.result() for j in jobs]
        reason = "client_gone" if gone is not None and gone in finished else "timeout"
        self.drop(jobs, reason)
        if reason == "client_gone":
            raise ClientGone("client closed the connection")
        raise DeadlineExceeded(f"no answer within {self.config.request_timeout_s:g} s")

    def drop(self, jobs: list[Job], reason: str) -> None:
        """Remove queued jobs before they cost compute; a running job's result will be ignored."""
        for j in jobs:
            if j.dropped or j.future.done():
                continue
            j.dropped = True
            if j in self.pending:
                self.pending.remove(j)
                self.metrics.dropped.labels(reason).inc()
            j.future.cancel()
        self.metrics.queue_depth.set(len(self.pending))

    @property
    def idle(self) -> bool:
        return not self.pending and not self.running

    # ---- the worker side --------------------------------------------------------------------

    async def start(self) -> None:
        self.task = asyncio.create_task(self._work())

    def take_batch(self) -> list[Job]:
        """The oldest job and the next ones with its parameters, up to max_batch_sequences sequences."""
        first = self.pending[0]
        batch, budget = [], self.config.max_batch_sequences
        for j in self.pending:
            if j.params == first.params and (not batch or budget >= j.cost):
                batch.append(j)
                budget -= j.cost
        for j in batch:
            self.pending.remove(j)
        self.metrics.queue_depth.set(len(self.pending))
        return batch

    def _batch_is_full(self) -> bool:
        first = self.pending[0]
        sequences = sum(j.cost for j in self.pending if j.params == first.params)
        return sequences + first.cost > self.config.max_batch_sequences

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            if not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            # the oldest job waits up to max_wait_ms for company with the same parameters
            gather_until = loop.time() + self.config.max_wait_ms / 1000
            while self.pending and not self._batch_is_full() and loop.time() < gather_until:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), gather_until - loop.time())
                except asyncio.TimeoutError:
                    break
            if not self.pending:  # every waiting client went away meanwhile
                continue
            self.running = self.take_batch()
            try:
                await self._compute(self.running)
            finally:
                self.running = []

    async def _compute(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            results = await self.thread.run(self.run_batch, batch)
        except Exception as e:  # noqa: BLE001  one failing batch fails only its own requests
            log.error("batch of %d failed: %s (ids %s)", len(batch), type(e).__name__, [j.request_id for j in batch])
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(BatchFailed("generation failed for this batch"))
            return
        self.metrics.batch_size.observe(len(batch))
        self.metrics.batch_sequences.observe(sum(j.cost for j in batch))
        log.info(
            "batch size=%d sequences=%d beams=%d seconds=%.3f ids=%s",
            len(batch),
            sum(j.cost for j in batch),
            batch[0].params.num_beams,
            time.perf_counter() - t0,
            ",".join(j.request_id for j in batch),
        )
        for j, r in zip(batch, results, strict=True):
            self.metrics.input_tokens.inc(r.input_tokens)
            self.metrics.output_tokens.inc(r.output_tokens)
            if not j.future.done():
                j.future.set_result(r)

    def close(self, message: str) -> None:
        """Take no more jobs; every job not answered yet (queued or running) fails with 503 `message`."""
        self.closed = True
        self.arrived.set()
        self.metrics.dropped.labels("shutdown").inc(len(self.pending))
        for j in [*self.pending, *self.running]:
            if not j.future.done():
                j.future.set_exception(NotReady(message))
        self.pending.clear()
        self.metrics.queue_depth.set(0)
        if self.task is not None:
            self.task.cancel()
        self.thread.stop()
