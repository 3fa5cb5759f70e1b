"""Start-up and shutdown: bad input refused before the server listens (one line, exit 2), the API key's sources
and the no-key warning, the production config with the reference's client, and the drain on SIGTERM."""

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from radreport.cli import run
from serve.__main__ import main
from serve.local_server import ROOT, Server, free_port

ENTRY_SCRIPT = ROOT / "docker" / "serve" / "serve"


def start(argv: list[str], capsys) -> tuple[int, list[str]]:
    """`python -m serve ARGV` in this process, up to where it would listen: exit status and stderr lines."""
    try:
        rc = run(main, argv)
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err.strip().splitlines()


def broken_copy(model_dir: Path, tmp_path: Path, damage) -> Path:
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    damage(out)
    return out


def truncate_weights(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def corrupt_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 1000)


def remove_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model"):
        (d / name).unlink(missing_ok=True)


def unknown_template(d: Path) -> None:
    meta = json.loads((d / "radreport.json").read_text())
    (d / "radreport.json").write_text(json.dumps({**meta, "prompt_template": "chat"}))


def remove_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def corrupt_generation_config(d: Path) -> None:
    (d / "generation_config.json").write_text("{bad")  # transformers would serve with its own defaults


def beams_over_the_limit(d: Path) -> None:
    path = d / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_beams": 100}))


def no_decoder_start(d: Path) -> None:
    (d / "generation_config.json").write_text("{}")  # generate() could not start a sequence


@pytest.mark.parametrize(
    "damage,words",
    [
        (truncate_weights, "the model cannot be loaded"),
        (corrupt_weights, "the model cannot be loaded"),
        (remove_tokenizer, "no tokenizer files"),
        (unknown_template, "radreport.json: prompt_template: unknown prompt template 'chat'"),
        (remove_weights, "no weights"),
        (corrupt_generation_config, "generation_config.json: not valid JSON"),
        (beams_over_the_limit, "generation_config.json: num_beams 100 is over this server's limit of 16"),
        (no_decoder_start, "generation_config.json: decoder_start_token_id: missing"),
    ],
    ids=[
        "truncated",
        "corrupt",
        "no-tokenizer",
        "unknown-template",
        "no-weights",
        "generation-config",
        "default-over-limit",
        "no-decoder-start",
    ],
)
def test_a_bad_model_directory_is_one_line_and_exit_2_before_listening(tiny_model_dir, tmp_path, capsys, damage, words):
    model = broken_copy(tiny_model_dir, tmp_path, damage)
    rc, err = start(["--model", str(model), "--config", "configs/serve/cpu.yaml", "--port", str(free_port())], capsys)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {model}") and words in err[0], err


@pytest.mark.parametrize(
    "argv,words",
    [
        (["--port", "70000"], "argument --port: must be between 1 and 65535, got 70000"),
        (["--config", "configs/serve/nope.yaml"], "config file not found"),
        (["max_batch_sequences=0"], "max_batch_sequences: must be >= 1"),
        (["max_num_beams=40"], "max_num_beams: must be <= max_batch_sequences (32)"),
        (["colour=blue"], "colour: unknown key"),
        (["warmup=yes please"], "warmup: expected true or false"),
        (["api_key=a", "api_key_file=/k"], "give the key one way, not both"),
        (["api_key_file=/nonexistent/key"], "api_key_file"),
    ],
)
def test_bad_arguments_and_config_are_one_line_and_exit_2(tiny_model_dir, capsys, argv, words):
    config = [] if "--config" in argv else ["--config", "configs/serve/cpu.yaml"]
    rc, err = start(["--model", str(tiny_model_dir), *config, *argv], capsys)
    assert rc == 2 and words in "\n".join(err), err
    assert err[0].startswith("error:") or err[-1].startswith("python -m serve: error:"), err  # ours, or argparse's


def test_a_missing_model_directory_in_a_real_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(tmp_path / "nope"), "--config", "configs/serve/cpu.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: model directory not found"]


@pytest.mark.parametrize("where", ["port-in-use", "not-this-machine"])
def test_an_address_that_cannot_be_listened_on_is_one_line_before_the_model_loads(tiny_model_dir, where):
    """It used to show after the model's load and warm-up (minutes for flan-t5-xl): several uvicorn lines, exit 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        host = "127.0.0.1" if where == "port-in-use" else "192.0.2.1"  # TEST-NET-1: no machine's own address
        r = subprocess.run(
            [sys.executable, "-m", "serve", "--model", str(tiny_model_dir), "--config", "configs/serve/cpu.yaml"]
            + ["--host", host, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "RADREPORT_API_KEY": "k"},  # a key: no warning about an open non-loopback address
            capture_output=True,
            text=True,
            timeout=120,
        )
    want = f"--port {port}: address already in use" if where == "port-in-use" else f"--host {host}: not an address"
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {want}"), lines  # no "loaded:" line: nothing loaded


def test_the_bound_address_is_the_one_served(tiny_model_dir, tmp_path):
    """The socket bound before the load is handed to uvicorn: it serves there, on a host name too."""
    s = Server(tiny_model_dir, tmp_path / "log", args=("--host", "localhost"))
    try:
        assert httpx.get(f"{s.url}/readyz").json()["status"] == "ready"
    finally:
        assert s.stop() == 0
    assert f"listening on http://127.0.0.1:{s.port}" in s.log_path.read_text()  # names where it listens


def test_api_key_from_a_file_and_refused_twice_or_under_sagemaker(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from serve.__main__ import resolve_api_key
    from serve.config import ServeConfig

    key_file = tmp_path / "key"
    key_file.write_text("  s3cret\n")
    assert resolve_api_key(ServeConfig(api_key_file=str(key_file)), "", sagemaker=False) == "s3cret"
    assert resolve_api_key(ServeConfig(), "from-env", sagemaker=False) == "from-env"
    assert resolve_api_key(ServeConfig(api_key="k"), "", sagemaker=False) == "k"
    key_file.write_text("\n")
    monkeypatch.setenv("RADREPORT_API_KEY", "also")
    model = ["--model", str(tiny_model_dir), "--config", "configs/serve/cpu.yaml"]
    rc, err = start([*model, "api_key=k"], capsys)
    assert rc == 2 and err == ["error: API key given 2 ways (api_key, RADREPORT_API_KEY): give it one way"]
    monkeypatch.delenv("RADREPORT_API_KEY")
    rc, err = start([*model, f"api_key_file={key_file}"], capsys)
    assert rc == 2 and err == [f"error: api_key_file: {key_file} is empty"]
    rc, err = start([*model, "--sagemaker", "api_key=k"], capsys)
    assert rc == 2 and "cannot be used under SageMaker hosting" in err[0]


def test_no_key_outside_sagemaker_warns_in_one_line(tmp_path, capsys, caplog):
    missing = ["--model", str(tmp_path / "nope"), "--config", "configs/serve/cpu.yaml"]
    with caplog.at_level(logging.WARNING, logger="serve"):
        start([*missing, "--host", "0.0.0.0"], capsys)  # refused at the model check, after the warning
        start([*missing, "--host", "0.0.0.0", "--sagemaker"], capsys)
        start([*missing], capsys)  # loopback: only this machine can reach it
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no API key: anyone who can reach 0.0.0.0:8000 can use the service; set RADREPORT_API_KEY or api_key_file=PATH"
    ]


@pytest.mark.parametrize("argv,warns", [([], True), (["serve"], False)], ids=["docker-run", "sagemaker-serve"])
def test_the_image_entry_script_knows_sagemaker_hosting_by_its_serve_argument(tmp_path, argv, warns):
    env = {**os.environ, "PROGRAM_DIR": str(ROOT), "PYTHON": sys.executable, "MODEL_DIR": str(tmp_path / "nope")}
    env.pop("RADREPORT_API_KEY", None)
    r = subprocess.run([str(ENTRY_SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr  # stopped at the (missing) model, before listening on 0.0.0.0
    assert ("WARNING serve no API key" in r.stderr) is warns, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: model directory not found"


def test_the_reference_client_works_unchanged_on_the_production_config(varied_model_dir, tmp_path, error_shape):
    s = Server(varied_model_dir, tmp_path / "log", config="configs/serve/g5.2xlarge.yaml")  # bf16, as on the A10G
    try:
        prompt = "Generate radiology report impressions based on the following findings. Findings: Lungs clear."
        reference = {"text_inputs": prompt, "max_length": 80, "num_return_sequences": 1, "num_beams": 10}
        r = httpx.post(f"{s.url}/invocations", json=reference, timeout=120)
        assert r.status_code == 200, r.text
        assert len(r.json()["generated_texts"]) == 1 and r.json()["generated_texts"][0]
        error_shape(httpx.get(f"{s.url}/docs"), 404, "not_found")  # no CDN scripts in production
        error_shape(httpx.get(f"{s.url}/redoc"), 404, "not_found")
        assert "/invocations" in httpx.get(f"{s.url}/openapi.json").json()["paths"]
    finally:
        s.stop()


def test_sigterm_drains_then_exits_within_the_drain_timeout_plus_a_second(tiny_model_dir, tmp_path, error_shape):
    drain = 2.0
    s = Server(
        tiny_model_dir, tmp_path / "log", f"drain_timeout_s={drain}", "max_wait_ms=0", "max_new_tokens_limit=1024"
    )
    answers = {}

    def ask(name, body):
        answers[name] = httpx.post(f"{s.url}/impression", json=body, timeout=60)

    short = threading.Thread(target=ask, args=("short", {"findings": "Study.", "num_beams": 2, "max_new_tokens": 32}))
    short.start()
    time.sleep(0.1)
    long = [
        threading.Thread(
            target=ask, args=(f"long{i}", {"findings": "Study.", "num_beams": 16 - i, "max_new_tokens": 640})
        )
        for i in range(3)
    ]
    for t in long:
        t.start()
    time.sleep(0.3)
    signalled = time.time()
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    error_shape(httpx.get(f"{s.url}/readyz"), 503, "not_ready")  # readiness fails at once
    assert httpx.get(f"{s.url}/ping").status_code == 503
    assert httpx.get(f"{s.url}/healthz").status_code == 200  # still alive
    late = httpx.post(f"{s.url}/impression", json={"findings": "Study."})
    assert "shutting down" in error_shape(late, 503, "not_ready")["message"]
    assert late.headers["retry-after"] == "5"
    rc = s.proc.wait(drain + 5)
    exited = time.time() - signalled
    for t in (short, *long):
        t.join(10)
    s.log.close()
    assert rc == 0 and exited <= drain + 1.0, (rc, exited)
    assert answers["short"].status_code == 200  # in flight and done within the drain timeout
    for name in ("long0", "long1", "long2"):
        r = answers[name]
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert "shut down before this request was answered" in error_shape(r, 503, "not_ready")["message"]
    # seconds of work each (the untrained model never says </s>): at most one fits in the drain timeout
    assert sum(answers[n].status_code == 503 for n in ("long0", "long1", "long2")) >= 2
    log = s.log_path.read_text()
    assert "Traceback" not in log and "ERROR" not in log and "draining: up to 2s" in log


@pytest.mark.parametrize("name", ["cpu.yaml", "g5.2xlarge.yaml"])
def test_shipped_serve_configs_load_and_fit_the_reference_client(name):
    from radreport.config import load_config
    from serve.config import ServeConfig

    path = ROOT / "configs" / "serve" / name
    config = load_config(ServeConfig, path)
    assert path.read_text().startswith("#")  # each config opens with its launch command
    assert config.max_num_beams >= 10 and config.max_new_tokens_limit >= 80  # {"num_beams": 10, "max_length": 80}
    assert config.docs is (name == "cpu.yaml")  # no CDN scripts in production
