"""Serving throughput: our batching server against a naive one-request-at-a-time server, one run.

    python bench/serve_throughput.py --model runs/demo/train/model [--out bench/results/serve_throughput.json]

Both are real `python -m serve` processes on loopback with the same model on the same machine. The
naive one runs with max_batch_size=1 (one worker, unbatched generate: how the reference's endpoint
ran). Beam 4; concurrency 1, 4 and 16; requests/s and p50/p99 latency. Target at concurrency 16:
batched >= 3x naive.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radreport.io import atomic_write_json  # noqa: E402
from radreport.schema import load_examples  # noqa: E402
from serve.local_server import Server  # noqa: E402


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    latencies: list[float] = []
    queue = list(bodies)

    async def worker(client):
        while queue:
            body = queue.pop()
            t0 = time.perf_counter()
            r = await client.post("/impression", json=body)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": q[98],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--requests-per-level", type=int, default=48)
    p.add_argument("--out", default=str(ROOT / "bench/results/serve_throughput.json"))
    a = p.parse_args()
    rows = load_examples(ROOT / "data/sample/dev1.json")
    bodies = [
        {"findings": rows[i % len(rows)].findings, "num_beams": a.beams, "max_new_tokens": a.max_new_tokens}
        for i in range(a.requests_per_level)
    ]
    results = []
    for name, overrides in (
        ("naive (1 request at a time)", ["max_batch_size=1", "max_wait_ms=0"]),
        ("batched (ours)", ["max_batch_size=16", "max_wait_ms=10"]),
    ):
        server = Server(Path(a.model), Path("/tmp") / f"bench-serve-{len(results)}.log", *overrides)
        try:
            for c in (1, 4, 16):
                n = max(c * 2, a.requests_per_level // (4 if c == 1 else 1))
                r = asyncio.run(load(server.url, bodies[:n], c))
                results.append({"server": name, "concurrency": c, **r})
        finally:
            server.stop()
    naive16 = next(r["rps"] for r in results if r["concurrency"] == 16 and r["server"].startswith("naive"))
    ours16 = next(r["rps"] for r in results if r["concurrency"] == 16 and r["server"].startswith("batched"))
    print(f"{'server':<30} {'conc':>4} {'req/s':>8} {'p50 s':>7} {'p99 s':>7}")
    for r in results:
        print(f"{r['server']:<30} {r['concurrency']:>4} {r['rps']:>8.2f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f}")
    print(f"concurrency 16: batched / naive = {ours16 / naive16:.2f}x (target >= 3x)")
    atomic_write_json(
        a.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "machine": platform.machine(),
            "beams": a.beams,
            "max_new_tokens": a.max_new_tokens,
            "results": results,
            "speedup_at_16": ours16 / naive16,
        },
    )


if __name__ == "__main__":
    main()
