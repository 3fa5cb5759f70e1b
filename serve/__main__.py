"""Serve a model directory: POST /impression, the SageMaker hosting routes, health, readiness, metrics.

python -m serve --model DIR [--config configs/serve/g5.2xlarge.yaml] [--host 127.0.0.1] [--port 8000] [key=value ...]

This is the service's edge: the only place that reads the environment (RADREPORT_API_KEY). Everything that
can refuse the config, the model directory or the address (--host, --port) runs before the model loads or the
server listens: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import NoReturn

import uvicorn

from radreport.cli import port, run
from radreport.config import load_config
from radreport.errors import InputError
from radreport.paths import existing_file
from serve.config import ServeConfig

API_KEY_ENV = "RADREPORT_API_KEY"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
log = logging.getLogger("serve")


def resolve_api_key(config: ServeConfig, from_env: str, sagemaker: bool) -> str:
    """The API key from exactly one of: config api_key (YAML or key=value), api_key_file, the environment."""
    given = [name for name, v in (("api_key", config.api_key), ("api_key_file", config.api_key_file)) if v]
    if from_env:
        given.append(API_KEY_ENV)
    if len(given) > 1:
        raise InputError(f"API key given {len(given)} ways ({', '.join(given)}): give it one way")
    key = config.api_key or from_env
    if config.api_key_file:
        path = existing_file(config.api_key_file, "api_key_file")
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"api_key_file: {path}: cannot be read ({type(e).__name__})") from None
        if not key:
            raise InputError(f"api_key_file: {path} is empty")
    if key and sagemaker:
        raise InputError(
            "an API key cannot be used under SageMaker hosting: InvokeEndpoint sends no key "
            "(IAM signs and authorises each call); remove it"
        )
    if any(c.isspace() for c in key):
        raise InputError("API key: must not contain whitespace")
    return key


def host_arg(text: str) -> str:
    """--host: an address or name, never empty (getaddrinfo would read "" as every interface, unasked)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty host (give 0.0.0.0 to listen on every interface)")
    return text.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (or hub id)")
    p.add_argument("--config", help="configs/serve/*.yaml")
    p.add_argument("--host", type=host_arg, default="127.0.0.1", help="an address of this machine (0.0.0.0: all)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument(
        "--sagemaker",
        action="store_true",
        help="running under SageMaker hosting (docker/serve/serve sets it): IAM guards the endpoint, no API key",
    )
    p.add_argument("overrides", nargs="*", help="key=value, e.g. max_batch_sequences=32")
    a = p.parse_args(argv)
    config = load_config(ServeConfig, a.config, a.overrides)
    key = resolve_api_key(config, os.environ.get(API_KEY_ENV, ""), a.sagemaker)
    config = replace(config, api_key=key, api_key_file="")
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not config.api_key and not a.sagemaker and a.host not in LOOPBACK:
        log.warning(
            "no API key: anyone who can reach %s:%d can use the service; set %s or api_key_file=PATH",
            a.host,
            a.port,
            API_KEY_ENV,
        )

    from radreport.modeling import check_model_dir
    from serve.model import load_served_model

    check_model_dir(a.model)  # the cheap checks first: a bad directory is named whatever the address
    sockets = bind(a.host, a.port)
    try:
        served = load_served_model(a.model, config)
    except BaseException as e:
        for sock in sockets:
            sock.close()
        if isinstance(e, Exception) and not isinstance(e, InputError):
            # e.g. out of GPU memory in the warm-up: one line, not a traceback
            print(
                f"error: {a.model}: the model could not be loaded and warmed up ({type(e).__name__}: {e})",
                file=sys.stderr,
            )
            return 1
        raise
    return serve_forever(served, config, sockets, a.log_level)


def bind(host: str, port_number: int) -> list[socket.socket]:
    """The address to listen on, bound before the model loads (minutes, for flan-t5-xl) and handed to uvicorn.

    Left to uvicorn, a port in use or a host that is not this machine's showed only after the load and
    warm-up, as several lines of uvicorn's and exit 3. Bound as asyncio's create_server binds (which uvicorn
    uses): every address the host resolves to, SO_REUSEADDR, IPv6 sockets IPv6-only. Not listening yet: a
    client is refused until the server is ready, as before."""
    try:
        infos = socket.getaddrinfo(host, port_number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRNOTAVAIL and len(addresses) > 1:
                continue  # as asyncio: e.g. localhost's ::1 where IPv6 is off; the other address serves
            for other in sockets:
                other.close()
            raise InputError(_bind_failure(host, port_number, e)) from None
        sockets.append(sock)
    if not sockets:
        raise InputError(f"--host {host}: not an address of this machine")
    return sockets


def _bind_failure(host: str, port_number: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"--port {port_number}: address already in use"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine"
    if e.errno == errno.EACCES:
        return f"--port {port_number}: permission denied (ports below 1024 need privileges)"
    return f"--host {host} --port {port_number}: cannot listen ({e.strerror})"


class DrainingServer(uvicorn.Server):
    """uvicorn with a drain before its shutdown. On the first SIGTERM or SIGINT the listener stays open (new
    requests get 503 in our error shape, readiness fails) while requests in flight finish, up to the drain
    timeout (serve.app.drain); then uvicorn's normal shutdown. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]):
        super().__init__(config)
        self.drain, self.loop, self.draining = drain, None, False

    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        for sock in sockets or ():  # uvicorn names its address only when it binds the socket itself
            host, port_number = sock.getsockname()[:2]
            log.info("listening on http://%s:%d", f"[{host}]" if ":" in host else host, port_number)

    def handle_exit(self, sig, frame) -> None:
        if self.draining or not self.started or self.loop is None:
            return super().handle_exit(sig, frame)
        self.draining = True  # not recorded as a captured signal: a drained server exits 0
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.drain_then_exit()))

    async def drain_then_exit(self) -> None:
        await self.drain()
        self.should_exit = True


def serve_forever(served, config: ServeConfig, sockets: list[socket.socket], log_level: str) -> NoReturn:
    from serve.app import create_app, drain

    app = create_app(served, config)
    # access_log off: the access line is ours (serve/edge.py), with ids and sizes, never text.
    # timeout_graceful_shutdown: after the drain every request has its answer; this only bounds stragglers.
    server = DrainingServer(
        uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=1),
        lambda: drain(app, config.drain_timeout_s),
    )
    server.run(sockets=sockets)  # bound by `bind`; uvicorn listens on them once the app has started
    # Exit now, not at the end of interpreter teardown: a batch abandoned by the drain may still be running on
    # the generation thread, and tearing torch down under it aborts the process (and takes seconds).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if server.started else 1)


if __name__ == "__main__":
    sys.exit(run(main))
