"""Careless and hostile clients against real servers on loopback (the untrained tiny model: it never says </s>,
so a request runs as long as it asks): clients that leave, all-or-nothing admission, slow bodies, API keys,
a full queue, deadlines."""

import asyncio
import socket
import threading
import time

import httpx
import pytest

from serve.local_server import Server

LONG = {"findings": "Study.", "num_beams": 16, "max_new_tokens": 512}  # seconds of work on the generation thread
SHORT = {"num_beams": 1, "max_new_tokens": 4}


@pytest.fixture(scope="module")
def busy(tiny_model_dir, tmp_path_factory):
    s = Server(
        tiny_model_dir,
        tmp_path_factory.mktemp("busy") / "server.log",
        "max_queue=8",
        "max_wait_ms=0",
        "body_timeout_s=1",
        "max_new_tokens_limit=1024",
    )
    yield s
    s.stop()


class Background:
    """A blocking request on its own thread; .result() waits for its response."""

    def __init__(self, server, body, path="/impression"):
        self.response = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "response", httpx.post(f"{server.url}{path}", json=body, timeout=120))
        )
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(120)
        return self.response


def wait_for(condition, seconds=10.0):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_clients_that_leave_have_their_queued_jobs_removed_before_any_compute(busy):
    computed = busy.metric("impression_batch_size_sum")
    gone = busy.metric("impression_jobs_dropped_total", 'reason="client_gone"')
    running = Background(busy, LONG)
    wait_for(lambda: busy.metric("impression_queue_depth") == 0 and running.thread.is_alive())
    time.sleep(0.2)  # the long request is on the generation thread

    async def impatient(i):
        async with httpx.AsyncClient(base_url=busy.url, timeout=0.3) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/impression", json={"findings": f"Study {i}.", **SHORT})

    async def leave_all():
        await asyncio.gather(*(impatient(i) for i in range(6)))

    asyncio.run(leave_all())
    wait_for(lambda: busy.metric("impression_jobs_dropped_total", 'reason="client_gone"') - gone == 6)
    assert running.thread.is_alive()  # all six left while the long batch was still running
    assert busy.metric("impression_queue_depth") == 0
    assert running.result().status_code == 200
    time.sleep(0.2)
    assert busy.metric("impression_batch_size_sum") - computed == 1  # only the long request was computed
    assert busy.log_path.read_text().count("POST /impression status=499") == 6


def test_invocations_is_admitted_whole_or_not_at_all(busy, error_shape):
    computed = busy.metric("impression_batch_size_sum")
    running = Background(busy, LONG)
    wait_for(lambda: busy.metric("impression_queue_depth") == 0 and running.thread.is_alive())
    time.sleep(0.2)
    queued = [Background(busy, {"findings": f"Study {i}.", **SHORT}) for i in range(5)]
    wait_for(lambda: busy.metric("impression_queue_depth") == 5)
    over = httpx.post(
        f"{busy.url}/invocations", json={"text_inputs": ["a", "b", "c", "d"], "max_length": 4, "num_beams": 1}
    )
    error_shape(over, 503, "overloaded")
    assert over.headers["retry-after"] == "1"
    assert busy.metric("impression_queue_depth") == 5  # none of its four jobs stayed behind
    fits = Background(busy, {"text_inputs": ["a", "b", "c"], "max_length": 4, "num_beams": 1}, "/invocations")
    wait_for(lambda: busy.metric("impression_queue_depth") == 8)
    assert running.result().status_code == 200
    assert all(q.result().status_code == 200 for q in queued) and fits.result().status_code == 200
    assert len(fits.result().json()["generated_texts"]) == 3
    assert busy.metric("impression_batch_size_sum") - computed == 1 + 5 + 3


def test_a_client_that_sends_its_body_slowly_gets_408_and_the_connection_closed(busy, error_shape):
    with socket.create_connection(("127.0.0.1", busy.port)) as s:
        s.sendall(
            b"POST /impression HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"findings": '
        )
        t0 = time.time()
        s.settimeout(10)
        reply = b""
        while chunk := s.recv(4096):  # until the server closes the connection
            reply += chunk
        held = time.time() - t0
    assert 0.9 < held < 4, held  # body_timeout_s=1
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    response = httpx.Response(408, headers={"content-type": "application/json"}, content=body)
    assert "1 s" in error_shape(response, 408, "body_timeout")["message"]


def test_api_key_from_the_environment_full_queue_deadline_and_length_limit(tiny_model_dir, tmp_path, error_shape):
    s = Server(
        tiny_model_dir,
        tmp_path / "log",
        "max_queue=2",
        "max_batch_sequences=8",
        "max_num_beams=8",
        "max_return_sequences=8",
        "request_timeout_s=1.5",
        "truncate_long_input=false",
        "max_wait_ms=0",
        "max_new_tokens_limit=1024",
        env={"RADREPORT_API_KEY": "s3cret"},
    )
    try:
        body = {"findings": "Lungs clear.", "max_new_tokens": 4}
        error_shape(httpx.post(f"{s.url}/impression", json=body), 401, "unauthorized")
        error_shape(httpx.post(f"{s.url}/impression", json=body, headers={"X-API-Key": "s3creT"}), 401)
        error_shape(httpx.post(f"{s.url}/nope", json=body), 401)  # unknown paths too: nothing leaks without a key
        for open_path in ("/healthz", "/readyz", "/ping", "/metrics"):
            assert httpx.get(f"{s.url}{open_path}").status_code == 200, open_path
        key = {"X-API-Key": "s3cret"}
        assert httpx.post(f"{s.url}/impression", json=body, headers=key).status_code == 200
        for scheme in ("Bearer", "bearer", "BEARER"):  # auth schemes are case-insensitive (RFC 7235)
            bearer = {"Authorization": f"{scheme} s3cret"}
            assert httpx.post(f"{s.url}/impression", json=body, headers=bearer).status_code == 200, scheme
        error_shape(httpx.post(f"{s.url}/impression", json=body, headers={"Authorization": "bearer s3creT"}), 401)
        long = httpx.post(f"{s.url}/impression", json={"findings": "Small effusion. " * 400}, headers=key)
        error_shape(long, 422, "input_too_long", "findings")

        async def flood():
            async with httpx.AsyncClient(base_url=s.url, timeout=60, headers=key) as c:
                return await asyncio.gather(
                    *(
                        c.post("/impression", json={"findings": f"Study {i}.", "num_beams": 8, "max_new_tokens": 768})
                        for i in range(12)
                    )
                )

        responses = asyncio.run(flood())
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503, 504} and 503 in codes and 504 in codes, codes
        for r in responses:
            if r.status_code == 503:
                error_shape(r, 503, "overloaded")
                assert r.headers["retry-after"] == "1"
            elif r.status_code == 504:
                error_shape(r, 504, "timeout")
        # the first runs for seconds, past every deadline; the ones queued behind it (max_queue 2) are dropped unseen
        timed_out = codes.count(504)
        assert timed_out in (2, 3) and codes.count(503) == 12 - timed_out, codes
        assert s.metric("impression_jobs_dropped_total", 'reason="timeout"') == timed_out - 1
        wait_for(lambda: httpx.post(f"{s.url}/impression", json=body, headers=key, timeout=60).status_code == 200, 30)
    finally:
        s.stop()
