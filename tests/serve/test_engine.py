"""The batching engine by itself, no server: grouping, the batch budget in sequences, the wait, the queue bound,
and work dropped for clients that are gone. The batch function is a real callable that records what it is
given (and, last, the real generation helper on the tiny model)."""

from __future__ import annotations

import asyncio
import time

import pytest

from radreport.generation import Generated, GenerationParams
from serve.config import ServeConfig
from serve.engine import BatchingEngine
from serve.errors import BatchFailed, ClientGone, DeadlineExceeded, NotReady, QueueFull
from serve.model import ServedModel
from serve.telemetry import Metrics

BEAM4 = GenerationParams(num_beams=4)
GREEDY = GenerationParams(num_beams=1)


class Recorder:
    """Upper-cases each findings text after `seconds`; remembers every batch (as findings) it computed."""

    def __init__(self, seconds: float = 0.0, fail_on: str = ""):
        self.batches: list[list[str]] = []
        self.seconds, self.fail_on = seconds, fail_on

    def __call__(self, jobs):
        self.batches.append([j.findings for j in jobs])
        time.sleep(self.seconds)
        if any(j.findings == self.fail_on for j in jobs):
            raise RuntimeError("this batch fails")
        return [Generated([(j.findings.upper(), -1.0)], 3, 2, False) for j in jobs]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(run_batch, **config) -> BatchingEngine:
    engine = BatchingEngine(run_batch, ServeConfig(**config), Metrics())
    await engine.start()
    return engine


async def ask(engine, findings: str, params=BEAM4, gone=None) -> str:
    (job,) = engine.submit([(findings, "")], params, findings)
    (g,) = await engine.results([job], gone)
    return g.candidates[0][0]


def dropped(engine, reason: str) -> float:
    return engine.metrics.dropped.labels(reason)._value.get()


def test_groups_jobs_by_parameters_in_arrival_order():
    recorder = Recorder()

    async def main():
        engine = await started(recorder, max_wait_ms=50)
        answers = await asyncio.gather(
            ask(engine, "a"), ask(engine, "b", GREEDY), ask(engine, "c"), ask(engine, "d"), ask(engine, "e", GREEDY)
        )
        engine.close("done")
        return answers

    assert run(main()) == ["A", "B", "C", "D", "E"]
    assert recorder.batches == [["a", "c", "d"], ["b", "e"]]


@pytest.mark.parametrize(
    "params,jobs,sizes",
    [
        (BEAM4, 5, [2, 2, 1]),  # 8 sequences: two requests of 4 beams
        (GREEDY, 10, [8, 2]),  # eight greedy requests
        (GenerationParams(num_beams=1, do_sample=True, num_return_sequences=3), 4, [2, 2]),  # samples count too
    ],
)
def test_batch_budget_counts_sequences_not_requests(params, jobs, sizes):
    recorder = Recorder()

    async def main():
        engine = await started(recorder, max_wait_ms=50, max_batch_sequences=8, max_num_beams=8)
        await asyncio.gather(*(ask(engine, f"s{i}", params) for i in range(jobs)))
        engine.close("done")

    run(main())
    assert [len(b) for b in recorder.batches] == sizes


def test_the_first_job_waits_max_wait_ms_for_company_and_no_longer():
    recorder = Recorder()

    async def main():
        engine = await started(recorder, max_wait_ms=150)
        first = asyncio.ensure_future(ask(engine, "early"))
        await asyncio.sleep(0.03)
        second = asyncio.ensure_future(ask(engine, "within the wait"))
        t0 = time.perf_counter()
        await asyncio.gather(first, second)
        waited = time.perf_counter() - t0
        await asyncio.sleep(0.05)
        await ask(engine, "later")
        engine.close("done")
        return waited

    waited = run(main())
    assert recorder.batches == [["early", "within the wait"], ["later"]]
    assert 0.05 < waited < 1.0


def test_a_full_batch_does_not_wait():
    recorder = Recorder()

    async def main():
        engine = await started(recorder, max_wait_ms=10_000, max_batch_sequences=2)
        t0 = time.perf_counter()
        await asyncio.gather(ask(engine, "a", GREEDY), ask(engine, "b", GREEDY))
        engine.close("done")
        return time.perf_counter() - t0

    assert run(main()) < 2.0 and recorder.batches == [["a", "b"]]


def test_queue_bound_admits_a_request_whole_or_not_at_all():
    async def main():
        engine = BatchingEngine(Recorder(), ServeConfig(max_queue=3), Metrics())  # not started: nothing leaves
        engine.submit([("a", ""), ("b", "")], BEAM4, "r1")
        with pytest.raises(QueueFull):
            engine.submit([("c", ""), ("d", "")], BEAM4, "r2")
        assert [j.findings for j in engine.pending] == ["a", "b"]  # none of r2's jobs stayed behind
        engine.submit([("c", "")], BEAM4, "r3")
        assert engine.metrics.queue_depth._value.get() == 3
        engine.close("done")

    run(main())


def test_a_gone_client_has_its_queued_job_removed_before_any_compute():
    recorder = Recorder(seconds=0.4)

    async def main():
        engine = await started(recorder, max_wait_ms=0)
        busy = asyncio.ensure_future(ask(engine, "running"))
        await asyncio.sleep(0.1)  # "running" is on the generation thread now
        gone = asyncio.Event()
        waiting = [asyncio.ensure_future(ask(engine, f"abandoned {i}", GREEDY, gone.wait())) for i in range(5)]
        await asyncio.sleep(0.05)
        assert len(engine.pending) == 5
        gone.set()  # the clients disconnect (ASGI http.disconnect)
        for w in waiting:
            with pytest.raises(ClientGone):
                await w
        assert engine.pending == []
        assert await busy == "RUNNING"
        await asyncio.sleep(0.1)
        engine.close("done")
        return dropped(engine, "client_gone")

    assert run(main()) == 5
    assert recorder.batches == [["running"]]


def test_a_passed_deadline_drops_the_queued_job():
    recorder = Recorder(seconds=0.5)

    async def main():
        engine = await started(recorder, max_wait_ms=0, request_timeout_s=0.2)
        busy = asyncio.ensure_future(ask(engine, "running"))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await ask(engine, "too late", GREEDY)
        with pytest.raises(DeadlineExceeded):  # "running" itself outlives its deadline too
            await busy
        await asyncio.sleep(0.5)
        engine.close("done")
        return dropped(engine, "timeout")

    assert run(main()) == 1
    assert recorder.batches == [["running"]]


def test_a_client_leaving_a_running_batch_does_not_disturb_the_others():
    recorder = Recorder(seconds=0.3)

    async def main():
        engine = await started(recorder, max_wait_ms=50)
        gone = asyncio.Event()
        leaver = asyncio.ensure_future(ask(engine, "leaves", BEAM4, gone.wait()))
        stayer = asyncio.ensure_future(ask(engine, "stays"))
        await asyncio.sleep(0.15)  # both are in the running batch
        gone.set()
        with pytest.raises(ClientGone):
            await leaver
        answer = await stayer
        engine.close("done")
        return answer, dropped(engine, "client_gone")

    assert run(main()) == ("STAYS", 0)  # nothing was queued to drop: the batch ran on
    assert recorder.batches == [["leaves", "stays"]]


def test_a_failing_batch_fails_only_its_own_jobs():
    recorder = Recorder(fail_on="boom")

    async def main():
        engine = await started(recorder, max_wait_ms=20)
        bad = asyncio.ensure_future(ask(engine, "boom", GREEDY))
        good = asyncio.ensure_future(ask(engine, "fine"))
        with pytest.raises(BatchFailed):
            await bad
        answer = await good
        engine.close("done")
        return answer

    assert run(main()) == "FINE"


def test_close_answers_queued_and_running_jobs_with_not_ready():
    recorder = Recorder(seconds=0.3)

    async def main():
        engine = await started(recorder, max_wait_ms=0)
        running = asyncio.ensure_future(ask(engine, "running"))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(ask(engine, "queued", GREEDY))
        await asyncio.sleep(0.05)
        engine.close("shutting down")
        for f in (running, queued):
            with pytest.raises(NotReady):
                await f
        with pytest.raises(NotReady):
            engine.submit([("new", "")], GREEDY, "r")
        return dropped(engine, "shutdown")

    assert run(main()) == 1
    assert recorder.batches == [["running"]]


def test_with_the_real_generation_helper_answers_equal_direct_generation(trained_model_dir):
    from radreport.modeling import load_model, load_tokenizer, read_meta

    served = ServedModel(
        load_model(trained_model_dir), load_tokenizer(trained_model_dir), read_meta(trained_model_dir), "m"
    )
    texts = ["Lungs are clear.", "Small left pleural effusion.", "Heart size is normal. No pneumothorax."]
    params = [GenerationParams(num_beams=2, max_new_tokens=8), GenerationParams(num_beams=1, max_new_tokens=8)]

    def run_batch(jobs):
        return served.generate([j.findings for j in jobs], jobs[0].params, [j.background for j in jobs])

    async def main():
        engine = await started(run_batch, max_wait_ms=50)
        jobs = [engine.submit([(t, "")], p, "r") for p in params for t in texts]
        results = [(await engine.results(j))[0] for j in jobs]
        engine.close("done")
        return results, engine.metrics.batch_size._sum.get()

    results, computed = run(main())
    assert computed == 6
    direct = [g for p in params for g in served.generate(texts, p, [""] * 3)]
    for got, want in zip(results, direct, strict=True):
        assert [t for t, _ in got.candidates] == [t for t, _ in want.candidates]
        assert [s for _, s in got.candidates] == pytest.approx([s for _, s in want.candidates], abs=1e-4)
