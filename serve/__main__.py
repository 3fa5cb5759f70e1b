"""Serve a model directory: POST /impression, the SageMaker hosting routes, health, readiness, metrics.

python -m serve --model DIR [--config configs/serve/g5.2xlarge.yaml] [--host 127.0.0.1] [--port 8000] [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import sys

from radreport.cli import run
from radreport.config import load_config
from serve.config import ServeConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory (or hub id)")
    p.add_argument("--config", help="configs/serve/*.yaml")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. max_batch_size=16")
    a = p.parse_args(argv)
    config = load_config(ServeConfig, a.config, a.overrides)
    import uvicorn

    from serve.app import create_app

    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # access_log off: uvicorn's access line is ours (EdgeMiddleware), with ids and sizes, never text
    uvicorn.run(
        create_app(a.model, config),
        host=a.host,
        port=a.port,
        log_level=a.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(config.drain_timeout_s),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
