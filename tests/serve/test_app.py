"""Through one real uvicorn process: both APIs, batching under concurrency, every error path, logs."""

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from radreport.schema import load_examples
from serve.local_server import ROOT, Server

MARKER = "ZEBRA-PATIENT-7731"


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


def test_impression_round_trip(server):
    r = post(
        server,
        "/impression",
        {
            "findings": f"Small left pleural effusion. {MARKER}",
            "num_beams": 3,
            "num_return_sequences": 2,
            "max_new_tokens": 6,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["impression"] == body["candidates"][0]["text"] and len(body["candidates"]) == 2
    assert body["candidates"][0]["score"] >= body["candidates"][1]["score"]
    assert body["usage"]["input_tokens"] > 0 and 0 < body["usage"]["output_tokens"] <= 7
    assert body["model"] == "model" and body["truncated"] is False and body["impression"]
    assert r.headers["x-request-id"]


def test_sagemaker_invocations_and_ping(server):
    assert httpx.get(f"{server.url}/ping").status_code == 200
    prompt = "Generate radiology report impressions based on the following findings. Findings: Lungs are clear."
    r = post(
        server, "/invocations", {"text_inputs": prompt, "max_length": 6, "num_beams": 2, "num_return_sequences": 2}
    )
    assert r.status_code == 200 and len(r.json()["generated_texts"]) == 2
    # the notebook's prompt and bare findings give the same answer: the template is not applied twice
    alone = post(server, "/impression", {"findings": "Lungs are clear.", "max_new_tokens": 6, "num_beams": 2})
    assert r.json()["generated_texts"][0] == alone.json()["impression"]
    many = post(server, "/invocations", {"text_inputs": ["Lungs are clear.", "Small effusion."], "max_length": 6})
    assert many.status_code == 200 and len(many.json()["generated_texts"]) == 2


def test_health_readiness_metrics_docs(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "impression_requests_total",
        "impression_request_seconds_bucket",
        "impression_batch_size_bucket",
        "impression_queue_depth",
        "impression_input_tokens_total",
    ):
        assert name in metrics
    assert httpx.get(f"{server.url}/docs").status_code == 200
    assert "/impression" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_200_concurrent_mixed_requests_equal_their_solo_answers(server, sample_dir):
    rows = load_examples(sample_dir / "dev1.json")
    rng = random.Random(0)
    reqs = [
        {
            "findings": rows[i % len(rows)].findings,
            "num_beams": rng.choice([1, 2, 4]),
            "max_new_tokens": rng.choice([4, 8]),
        }
        for i in range(200)
    ]

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=200)) as c:
            return await asyncio.gather(*(c.post("/impression", json=r) for r in reqs))

    before = _batch_count(server)
    together = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in together), [r.text for r in together if r.status_code != 200][:3]
    batches = _batch_count(server) - before
    assert batches < 120, f"{batches} batches for 200 requests: no batching happened"
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for req, got in zip(reqs, together, strict=True):
            solo = c.post("/impression", json=req).json()
            a, b = got.json()["candidates"], solo["candidates"]
            assert [x["text"] for x in a] == [x["text"] for x in b], req
            assert [x["score"] for x in a] == pytest.approx([x["score"] for x in b], abs=1e-4), req
    assert len({r.json()["impression"] for r in together}) > 1  # answers depend on the request


def _batch_count(server) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("impression_batch_size_count"):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize(
    "body,field",
    [
        ({"findings": "   "}, "findings"),
        ({"findings": 42}, "findings"),
        ({}, "findings"),
        ({"findings": "x", "num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"findings": "x", "num_beams": 0}, "num_beams"),
        ({"findings": "x", "num_beams": 30}, "num_beams"),  # within the schema, over this server's limit
        ({"findings": "x", "max_new_tokens": 100000}, "max_new_tokens"),
        ({"findings": "x", "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field(server, body, field):
    r = post(server, "/impression", body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"].split(".")[0] == field or field in err["message"], err


def test_body_too_large_and_not_utf8_and_long_findings(server):
    r = post(server, "/impression", {"findings": "x" * 70000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = httpx.post(
        f"{server.url}/impression", content=b'{"findings": "caf\xe9"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_utf8"
    r = post(server, "/impression", {"findings": "Small effusion. " * 400, "max_new_tokens": 4, "num_beams": 1})
    assert r.status_code == 200 and r.json()["truncated"] is True


def test_logs_never_contain_findings_text(server):
    post(server, "/impression", {"findings": f"Tiny right pneumothorax. {MARKER}", "max_new_tokens": 4})
    post(server, "/impression", {"findings": f"{MARKER}", "num_beams": 2, "num_return_sequences": 5})  # 422 path
    log = server.log_path.read_text()
    assert "POST /impression status=200" in log and MARKER not in log


def test_constrained_server_401_503_504_422(tiny_model_dir, tmp_path):  # untrained: long generations
    s = Server(
        tiny_model_dir,
        tmp_path / "log",
        "api_key=s3cret",
        "max_queue=2",
        "max_batch_size=1",
        "request_timeout_s=1.5",
        "truncate_long_input=false",
        "max_wait_ms=0",
    )
    try:
        assert post(s, "/impression", {"findings": "x"}).status_code == 401
        assert httpx.get(f"{s.url}/healthz").status_code == 200 and httpx.get(f"{s.url}/ping").status_code == 200
        key = {"X-API-Key": "s3cret"}
        assert post(s, "/impression", {"findings": "Lungs clear.", "max_new_tokens": 4}, headers=key).status_code == 200
        assert (
            post(
                s,
                "/impression",
                {"findings": "Lungs clear.", "max_new_tokens": 4},
                headers={"Authorization": "Bearer s3cret"},
            ).status_code
            == 200
        )
        r = post(s, "/impression", {"findings": "Small effusion. " * 400}, headers=key)
        assert r.status_code == 422 and r.json()["error"]["code"] == "input_too_long"

        async def flood():
            async with httpx.AsyncClient(base_url=s.url, timeout=60, headers=key) as c:
                return await asyncio.gather(
                    *(
                        c.post("/impression", json={"findings": f"Study {i}.", "num_beams": 8, "max_new_tokens": 256})
                        for i in range(12)
                    )
                )

        codes = [r.status_code for r in asyncio.run(flood())]
        assert 503 in codes, codes
        assert 504 in codes, codes
        busy = [r for r in asyncio.run(flood()) if r.status_code == 503]
        assert busy and busy[0].headers["retry-after"] == "1"
        # the server stays up
        assert post(s, "/impression", {"findings": "Lungs clear.", "max_new_tokens": 4}, headers=key).status_code == 200
    finally:
        s.stop()


def test_shutdown_drains_in_flight_requests(tiny_model_dir, tmp_path):
    s = Server(tiny_model_dir, tmp_path / "log")
    result = {}

    def slow():
        result["r"] = post(s, "/impression", {"findings": "Study.", "num_beams": 8, "max_new_tokens": 200})

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert result["r"].status_code == 200
    # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done
    assert s.proc.wait(60) in (0, -signal.SIGTERM)
    s.log.close()
    assert "Application shutdown complete" in s.log_path.read_text()


def test_schemathesis_finds_no_server_error(server):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--request-timeout",
            "60",
            "--generation-deterministic",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:]
