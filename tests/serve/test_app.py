"""Through one real uvicorn process on loopback: both APIs, batch-independent answers, the JumpStart parameters,
every error in one shape, logs that name no findings and cannot be forged."""

import asyncio
import random
import socket
import subprocess
import sys

import httpx
import pytest

from radreport.schema import load_examples
from serve.local_server import ROOT

MARKER = "ZEBRA-PATIENT-7731"
INSTRUCTION = "Generate radiology report impressions based on the following findings."


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


def test_impression_round_trip(server):
    r = post(
        server,
        "/impression",
        {"findings": f"Small left pleural effusion. {MARKER}", "num_beams": 3, "num_return_sequences": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"impression", "candidates", "model", "usage", "truncated"}
    assert body["impression"] == body["candidates"][0]["text"] != "" and len(body["candidates"]) == 2
    assert body["candidates"][0]["score"] >= body["candidates"][1]["score"]
    assert -20 < body["candidates"][1]["score"] < 0
    assert body["usage"]["input_tokens"] > 10 and 1 <= body["usage"]["output_tokens"] <= 64
    assert body["model"] == "model" and body["truncated"] is False
    assert len(r.headers["x-request-id"]) == 16


def test_sagemaker_invocations_and_ping(server, error_shape):
    assert httpx.get(f"{server.url}/ping").status_code == 200
    prompt = f"{INSTRUCTION} Findings: Lungs are clear."
    r = post(
        server, "/invocations", {"text_inputs": prompt, "max_length": 6, "num_beams": 2, "num_return_sequences": 2}
    )
    assert r.status_code == 200 and len(r.json()["generated_texts"]) == 2
    # the notebook's prompt and bare findings give the same answer: the template is not applied twice
    alone = post(server, "/impression", {"findings": "Lungs are clear.", "max_new_tokens": 6, "num_beams": 2})
    assert r.json()["generated_texts"][0] == alone.json()["impression"]
    wrapped = post(server, "/impression", {"findings": prompt, "max_new_tokens": 6, "num_beams": 2})
    assert wrapped.json()["impression"] == alone.json()["impression"]  # /impression unwraps a whole prompt too
    assert wrapped.json()["candidates"] == alone.json()["candidates"]
    # a "Findings:" that is not the template's is the findings' own text: nothing before it is dropped
    mention = f"{INSTRUCTION} Heart size normal. Prior Findings: stable."
    kept = post(server, "/impression", {"findings": mention, "max_new_tokens": 6})
    tail = post(server, "/impression", {"findings": "stable.", "max_new_tokens": 6})
    assert kept.json()["usage"]["input_tokens"] > tail.json()["usage"]["input_tokens"] + 4
    # a background inside the prompt is kept; given as a field as well, it is said twice: 422
    with_background = f"{INSTRUCTION} Background: chest pain Findings: Lungs are clear."
    field = post(server, "/impression", {"findings": "Lungs are clear.", "background": "chest pain"})
    inside = post(server, "/impression", {"findings": with_background})
    assert inside.json()["candidates"] == field.json()["candidates"] and inside.json()["usage"] == field.json()["usage"]
    twice = post(server, "/impression", {"findings": with_background, "background": "cough"})
    assert twice.status_code == 422 and twice.json()["error"]["field"] == "background"
    many = post(server, "/invocations", {"text_inputs": ["Lungs are clear.", "Small effusion."], "max_length": 6})
    assert many.status_code == 200 and len(many.json()["generated_texts"]) == 2
    assert all(isinstance(t, str) and t for t in many.json()["generated_texts"])


@pytest.mark.parametrize(
    "text_inputs", [f"{INSTRUCTION} Findings: ", f"{INSTRUCTION} Findings:", INSTRUCTION, ["Lungs clear.", INSTRUCTION]]
)
def test_a_prompt_that_is_only_the_instruction_is_the_422_of_empty_findings(server, error_shape, text_inputs):
    empty = error_shape(post(server, "/impression", {"findings": "  "}), 422, "invalid_request", "findings")
    err = error_shape(post(server, "/invocations", {"text_inputs": text_inputs}), 422, "invalid_request", "text_inputs")
    assert "findings is empty or whitespace" in empty["message"] and "findings is empty or whitespace" in err["message"]


def test_jumpstart_sampling_parameters_are_honoured(server):
    prompt = f"{INSTRUCTION} Findings: Heart size is normal. Mild bibasilar atelectasis."
    sample = {"text_inputs": prompt, "max_length": 24, "do_sample": True, "temperature": 1.5, "top_p": 0.95}
    first = post(server, "/invocations", {**sample, "seed": 1, "num_return_sequences": 3, "num_beams": 1})
    again = post(server, "/invocations", {**sample, "seed": 1, "num_return_sequences": 3, "num_beams": 1})
    assert first.status_code == 200, first.text
    assert first.json() == again.json() and len(first.json()["generated_texts"]) == 3  # a seed reproduces
    seeds = {
        tuple(post(server, "/invocations", {**sample, "seed": s, "num_beams": 1}).json()["generated_texts"])
        for s in range(2, 8)
    }
    assert len(seeds) > 1  # and the seed is used
    greedy = post(server, "/invocations", {"text_inputs": prompt, "max_length": 24, "num_beams": 1}).json()
    top1 = {"text_inputs": prompt, "max_length": 24, "num_beams": 1, "do_sample": True, "top_k": 1, "seed": 3}
    assert post(server, "/invocations", top1).json() == greedy  # top_k=1 sampling is greedy search
    ngram = {
        "text_inputs": prompt,
        "max_length": 24,
        "num_beams": 4,
        "no_repeat_ngram_size": 1,
        "early_stopping": False,
    }
    words = post(server, "/invocations", ngram).json()["generated_texts"][0].split()
    assert words and len(words) == len(set(words))  # no token twice: no word twice


def test_health_readiness_metrics_and_docs_on_the_cpu_config(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "model": "model"}
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        "impression_requests_total",
        "impression_request_seconds_bucket",
        "impression_batch_size_bucket",
        "impression_batch_sequences_bucket",
        "impression_queue_depth",
        "impression_input_tokens_total",
        "impression_jobs_dropped_total",
    ):
        assert f"\n{name}" in metrics, name
    assert "swagger-ui" in httpx.get(f"{server.url}/docs").text  # configs/serve/cpu.yaml: docs: true
    assert "redoc" in httpx.get(f"{server.url}/redoc").text
    assert "/impression" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


MIXED = [
    {"num_beams": 1, "max_new_tokens": 24},  # greedy: answers end at different lengths in one batch
    {"num_beams": 4, "max_new_tokens": 24, "num_return_sequences": 2},
    {"num_beams": 2, "max_new_tokens": 8, "length_penalty": 2.0},
    {"num_beams": 1, "max_new_tokens": 24, "do_sample": True, "seed": 5, "num_return_sequences": 2},
    {"num_beams": 10, "max_new_tokens": 24},  # the reference's beam width
]


def test_120_concurrent_mixed_requests_equal_their_solo_answers(server, sample_dir):
    rows = load_examples(sample_dir / "dev1.json")
    rng = random.Random(0)
    reqs = [{"findings": rows[i % 40].findings, **rng.choice(MIXED)} for i in range(120)]

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=120)) as c:
            return await asyncio.gather(*(c.post("/impression", json=r) for r in reqs))

    before = server.metric("impression_batch_size_count")
    together = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in together), [r.text for r in together if r.status_code != 200][:3]
    batches = server.metric("impression_batch_size_count") - before
    assert batches < 60, f"{batches} batches for 120 requests: no batching happened"
    greedy_lengths = set()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for req, got in zip(reqs, together, strict=True):
            solo = c.post("/impression", json=req).json()  # alone: a batch of one
            a, b = got.json()["candidates"], solo["candidates"]
            assert [x["text"] for x in a] == [x["text"] for x in b], req
            assert [x["score"] for x in a] == pytest.approx([x["score"] for x in b], abs=1e-4), req
            if req == MIXED[0] | {"findings": req["findings"]}:
                greedy_lengths.add(solo["usage"]["output_tokens"])
    assert len(greedy_lengths) > 1  # greedy batches held answers of different lengths (padding after </s>)
    assert len({r.json()["impression"] for r in together}) > 1  # answers depend on the request


@pytest.mark.parametrize(
    "body,field,words",
    [
        ({"findings": "   "}, "findings", "empty"),
        ({"findings": 42}, "findings", "expected text, got 42"),
        ({}, "findings", "required"),
        ({"findings": "x", "num_beams": True}, "num_beams", "expected an integer, got true (types are strict"),
        ({"findings": "x", "num_beams": "4"}, "num_beams", 'expected an integer, got "4" (types are strict'),
        ({"findings": "x", "num_beams": 4.0}, "num_beams", "expected an integer, got 4.0"),
        ({"findings": "x", "length_penalty": "1.0"}, "length_penalty", "expected a number"),
        ({"findings": "x", "do_sample": "true"}, "do_sample", "expected true or false"),
        ({"findings": "x", "num_beams": 2, "num_return_sequences": 3}, "num_return_sequences", "exceed num_beams"),
        ({"findings": "x", "num_beams": 0}, "num_beams", "greater than or equal to 1"),
        ({"findings": "x", "num_beams": 30}, "num_beams", "<= 16 on this server"),
        ({"findings": "x", "num_beams": 65}, "num_beams", "num_beams: must be <= 16 on this server"),  # one message
        (
            {"findings": "x", "num_beams": 16, "num_return_sequences": 17},
            "num_return_sequences",
            "num_return_sequences: must be <= 8 on this server",
        ),
        (
            {"findings": "x", "do_sample": True, "num_return_sequences": 10**20},
            "num_return_sequences",
            "num_return_sequences: must be <= 8 on this server",
        ),
        (
            {"findings": "x", "max_new_tokens": 100000},
            "max_new_tokens",
            "max_new_tokens: must be <= 256 on this server",
        ),
        ({"findings": "x", "max_new_tokens": 300}, "max_new_tokens", "<= 256 on this server"),
        ({"findings": "x", "colour": "blue"}, "colour", "unknown parameter (known: background, do_sample"),
        ({"findings": "x", "temperature": 0.5}, "temperature", "only used when sampling"),
        ({"findings": "x", "seed": 3}, "seed", "only used when sampling"),
        ({"findings": "x", "top_k": 3}, "top_k", "only used when sampling"),
        ({"findings": "x", "do_sample": True, "top_p": 0}, "top_p", "greater than 0"),
        ({"findings": "x", "do_sample": True, "seed": -1}, "seed", "greater than or equal to 0"),
        ({"findings": "Lungs clear.\u0000x"}, "findings", "findings: holds a NUL character (at character 12)"),
        ({"findings": "x", "background": "a\u0000"}, "background", "background: holds a NUL character"),
        (
            {"findings": "x", "do_sample": True, "num_beams": 1, "num_return_sequences": 9},
            "num_return_sequences",
            "<= 8",
        ),
    ],
)
def test_bad_input_is_422_naming_the_field(server, error_shape, body, field, words):
    err = error_shape(post(server, "/impression", body), 422, field=field)
    assert err["message"].startswith(f"{field}:") and words in err["message"], err


def test_a_lone_surrogate_escape_is_422_naming_the_field(server, error_shape):
    """JSON may write "\\ud800"; decoded, it is text no file can hold (refused at load too; here pydantic's
    JSON parser refuses it before our check)."""
    raw = b'{"findings": "Lungs \\ud800clear."}'
    r = httpx.post(f"{server.url}/impression", content=raw, headers={"Content-Type": "application/json"}, timeout=60)
    err = error_shape(r, 422, field="findings")
    assert err["message"] == "findings: Input should be a valid string, unable to parse raw data as a unicode string"


@pytest.mark.parametrize(
    "body,field,words",
    [
        ({"text_inputs": "x", "max_time": 5}, "max_time", "unknown parameter"),  # would make answers load-dependent
        ({"text_inputs": "x", "max_length": 300}, "max_length", "<= 256 on this server"),
        ({"text_inputs": "x", "max_length": 5000}, "max_length", "max_length: must be <= 256 on this server"),
        ({"text_inputs": "x", "num_beams": 100}, "num_beams", "num_beams: must be <= 16 on this server"),
        ({"text_inputs": "x", "temperature": 0.3}, "temperature", "only used when sampling"),
        ({"text_inputs": ["x", 3]}, "text_inputs.1", "text_inputs.1: expected text, got 3"),
        ({"text_inputs": []}, "text_inputs", "text_inputs: an empty list"),
        (
            {"text_inputs": ["x", "y\u0000"]},
            "text_inputs",
            "text_inputs: input 1 holds a NUL character (at character 1)",
        ),
    ],
)
def test_invocations_bad_input_is_422_naming_the_parameter(server, error_shape, body, field, words):
    err = error_shape(post(server, "/invocations", body), 422, field=field)
    assert words in err["message"] and f"{field}: {field}:" not in err["message"], err


def test_every_error_the_service_writes_has_the_one_shape(server, error_shape):
    url = server.url
    error_shape(httpx.get(f"{url}/nope"), 404, "not_found")
    r = httpx.get(f"{url}/impression")
    error_shape(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    json_header = {"content-type": "application/json"}
    err = error_shape(
        httpx.post(f"{url}/impression", content=b'{"findings": ', headers=json_header), 400, "invalid_json"
    )
    assert err["field"] == "body" and "not valid JSON" in err["message"]
    error_shape(httpx.post(f"{url}/impression", content=b'{"findings": "x"}'), 415, "unsupported_media_type")
    not_object = error_shape(
        httpx.post(f"{url}/impression", content=b"[1, 2]", headers=json_header), 422, "invalid_request", "body"
    )
    assert not_object["message"] == "body: expected a JSON object, got [1, 2]"
    error_shape(post(server, "/impression", {"findings": "x" * 70000}), 413, "body_too_large")
    not_utf8 = httpx.post(f"{url}/impression", content=b'{"findings": "caf\xe9"}', headers=json_header)
    error_shape(not_utf8, 400, "not_utf8")
    nan = httpx.post(f"{url}/impression", content=b'{"findings": "x", "length_penalty": NaN}', headers=json_header)
    error_shape(nan, 422, "invalid_request", "length_penalty")
    long = post(server, "/impression", {"findings": "Small effusion. " * 400, "max_new_tokens": 4, "num_beams": 1})
    assert long.status_code == 200 and long.json()["truncated"] is True


@pytest.mark.parametrize("path", ["/impression", "/invocations"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_body_not_sent_as_json_is_415_saying_what_to_send(server, error_shape, path, content_type):
    """It was a 422 whose message read `body: expected a JSON object, sent with content-type: application/json`."""
    body = b'{"findings": "Lungs clear.", "text_inputs": "Lungs clear."}'
    headers = {"content-type": content_type} if content_type else {}
    err = error_shape(httpx.post(f"{server.url}{path}", content=body, headers=headers), 415, "unsupported_media_type")
    assert "send a JSON object with content-type: application/json" in err["message"], err
    assert (f"got content-type: {content_type}" if content_type else "no content-type was sent") in err["message"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/x+json"])
def test_json_in_any_spelling_of_its_media_type_is_accepted(server, content_type):
    body = b'{"findings": "Lungs clear.", "max_new_tokens": 2}'
    r = httpx.post(f"{server.url}/impression", content=body, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == 200, r.text


def test_logs_never_contain_findings_text(server):
    post(server, "/impression", {"findings": f"Tiny right pneumothorax. {MARKER}", "max_new_tokens": 4})
    post(server, "/impression", {"findings": f"{MARKER}", "num_beams": 2, "num_return_sequences": 5})  # 422 path
    post(server, "/invocations", {"text_inputs": [f"{MARKER} one", 7]})  # 422 quoting the input? not in the log
    log = server.log_path.read_text()
    assert "POST /impression status=200" in log and MARKER not in log


def test_a_path_with_crlf_cannot_forge_a_log_line(server):
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /x%0d%0aFORGED%20status=200%20admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404")
    lines = server.log_path.read_text().splitlines()
    assert not any(line.startswith("FORGED") for line in lines)
    assert any("GET /x%0D%0AFORGED%20status=200%20admin status=404" in line for line in lines)


def test_request_ids_are_accepted_only_in_their_safe_form(server):
    good = post(
        server,
        "/impression",
        {"findings": "Lungs clear.", "max_new_tokens": 2},
        headers={"x-request-id": "abc-1.2:3_4"},
    )
    assert good.headers["x-request-id"] == "abc-1.2:3_4"
    for bad in ("has space", "x" * 65, "semi;colon", 'quote"'):
        r = post(
            server, "/impression", {"findings": "Lungs clear.", "max_new_tokens": 2}, headers={"x-request-id": bad}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] != bad and len(r.headers["x-request-id"]) == 16
    log = server.log_path.read_text()
    assert "id=abc-1.2:3_4 POST /impression status=200" in log and "semi;colon" not in log and "has space" not in log


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
