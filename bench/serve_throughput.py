"""Serving throughput and memory: batched vs one request at a time, then 64 mixed clients, some of whom leave.

    python bench/serve_throughput.py --model runs/demo/train/model [--out bench/results/serve_throughput.json]

Every server is a real `python -m serve` process on loopback (configs/serve/cpu.yaml), same model, same machine.
1. Beam 4, concurrency 1, 4 and 16, against the naive server (max_batch_sequences=4: one request per batch,
   as the reference's endpoint ran). Target at concurrency 16: batched >= 3x naive.
2. Concurrency 64, mixed generation parameters (greedy, beam 4, the reference's beam 10, seeded sampling with
   3 candidates, two lengths), a quarter of the clients giving up after 0.1 s (they disconnect). Completed
   requests/s, p50/p99 of the completed ones, jobs the server dropped unseen, peak resident memory.
3. The same mixed load at concurrency 64 and then 256 against max_queue=64: past the bound the server answers
   503 at once, so its peak resident memory stays where it was (the queue bound keeps memory flat).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radreport.cli import path_arg, positive_int  # noqa: E402
from radreport.errors import InputError  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.modeling import check_model_dir  # noqa: E402
from radreport.schema import load_examples  # noqa: E402
from serve.local_server import Server  # noqa: E402

MIXED = [
    {"num_beams": 1, "max_new_tokens": 32},
    {"num_beams": 4, "max_new_tokens": 32},
    {"num_beams": 4, "max_new_tokens": 16, "num_return_sequences": 2},
    {"num_beams": 10, "max_new_tokens": 32},
    {"num_beams": 1, "max_new_tokens": 32, "do_sample": True, "seed": 1, "top_p": 0.9, "num_return_sequences": 3},
]
LEAVE_AFTER_S = 0.1


class RssSampler:
    """Peak resident memory of a process while the block runs (VmRSS polled every 20 ms)."""

    def __init__(self, pid: int):
        self.path, self.peak, self.stop = Path(f"/proc/{pid}/status"), 0, threading.Event()

    def rss(self) -> int:
        return int(re.search(r"VmRSS:\s+(\d+) kB", self.path.read_text()).group(1)) * 1024

    def __enter__(self):
        def poll():
            while not self.stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.02)

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """`concurrency` clients send `bodies` (a body with "_leaves" gives up after LEAVE_AFTER_S)."""
    latencies: list[float] = []
    counts = {"completed": 0, "abandoned": 0, "refused_503": 0, "transport_errors": 0}
    queue = list(bodies)

    async def client(c: httpx.AsyncClient):
        while queue:
            body = dict(queue.pop())
            leaves = body.pop("_leaves", False)
            t0 = time.perf_counter()
            try:
                r = await c.post("/impression", json=body, timeout=LEAVE_AFTER_S if leaves else 300)
            except httpx.TimeoutException:
                counts["abandoned"] += 1
                continue
            except httpx.TransportError as e:  # reported, not hidden: the table has a column for it
                counts["transport_errors"] += 1
                print(f"transport error: {type(e).__name__} after {time.perf_counter() - t0:.3f} s", file=sys.stderr)
                continue
            if r.status_code == 503:
                counts["refused_503"] += 1
                continue
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            counts["completed"] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(bodies),
        **counts,
        "rps": counts["completed"] / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": q[98],
        "wall_s": wall,
    }


def mixed_bodies(findings: list[str], n: int, leave_fraction: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        body = {"findings": findings[i % len(findings)], **rng.choice(MIXED)}
        if rng.random() < leave_fraction:
            body["_leaves"] = True
        bodies.append(body)
    return bodies


def run_level(server: Server, bodies: list[dict], concurrency: int) -> dict:
    dropped = server.metric("impression_jobs_dropped_total", 'reason="client_gone"')
    computed = server.metric("impression_batch_size_sum")
    with RssSampler(server.proc.pid) as rss:
        result = asyncio.run(load(server.url, bodies, concurrency))
    time.sleep(0.5)  # let the last batch finish before reading the counters
    return {
        **result,
        "server_dropped_unseen": server.metric("impression_jobs_dropped_total", 'reason="client_gone"') - dropped,
        "server_computed": server.metric("impression_batch_size_sum") - computed,
        "peak_rss_mib": rss.peak / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the model directory the server loads")
    p.add_argument("--out", type=path_arg, default=ROOT / "bench/results/serve_throughput.json")
    p.add_argument("--beams", type=positive_int, default=4)
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--requests-per-level", type=positive_int, default=48, help="requests sent at each concurrency")
    a = p.parse_args()
    try:
        check_model_dir(a.model)  # what the server checks at start-up: one line here, not its exit as a traceback
    except InputError as e:
        p.error(f"--model: {e}")
    findings = [r.findings for r in load_examples(ROOT / "data/sample/dev1.json")]
    logs = Path("/tmp")

    # 1. batched vs naive, one setting
    same = [
        {"findings": findings[i % len(findings)], "num_beams": a.beams, "max_new_tokens": a.max_new_tokens}
        for i in range(a.requests_per_level)
    ]
    results = []
    for name, overrides in (
        (
            "naive (1 request at a time)",
            [
                f"max_batch_sequences={a.beams}",
                f"max_num_beams={a.beams}",
                f"max_return_sequences={a.beams}",
                "max_wait_ms=0",
            ],
        ),
        ("batched (ours)", ["max_batch_sequences=64", "max_wait_ms=10"]),
    ):
        server = Server(Path(a.model), logs / f"bench-serve-{len(results)}.log", *overrides)
        try:
            for c in (1, 4, 16):
                n = max(c * 2, a.requests_per_level // (4 if c == 1 else 1))
                r = asyncio.run(load(server.url, same[:n], c))
                results.append({"server": name, "concurrency": c, **r})
        finally:
            server.stop()
    naive16 = next(r["rps"] for r in results if r["concurrency"] == 16 and r["server"].startswith("naive"))
    ours16 = next(r["rps"] for r in results if r["concurrency"] == 16 and r["server"].startswith("batched"))

    # 2. and 3. mixed parameters, clients that leave, the queue bound
    mixed = []
    for name, overrides, levels in (
        ("mixed, 25% leave (cpu.yaml)", [], [(64, 256)]),
        ("mixed, 25% leave, max_queue=64", ["max_queue=64"], [(64, 256), (256, 1024)]),
    ):
        server = Server(Path(a.model), logs / f"bench-serve-mixed-{len(mixed)}.log", *overrides)
        try:
            for concurrency, n in levels:
                bodies = mixed_bodies(findings, n, 0.25, seed=concurrency)
                mixed.append({"server": name, "concurrency": concurrency, **run_level(server, bodies, concurrency)})
            mixed[-1]["server_peak_rss_mib_vmhwm"] = server.peak_rss_bytes() / 2**20
        finally:
            server.stop()

    print(f"{'server':<32} {'conc':>4} {'req/s':>8} {'p50 s':>7} {'p99 s':>7}")
    for r in results:
        print(f"{r['server']:<32} {r['concurrency']:>4} {r['rps']:>8.2f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f}")
    print(f"concurrency 16: batched / naive = {ours16 / naive16:.2f}x (target >= 3x)\n")
    print(
        f"{'server':<32} {'conc':>4} {'sent':>5} {'done':>5} {'left':>5} {'503':>5} {'dropped':>7} "
        f"{'computed':>8} {'errors':>6} {'req/s':>7} {'p50 s':>6} {'p99 s':>6} {'peak RSS MiB':>12}"
    )
    for r in mixed:
        print(
            f"{r['server']:<32} {r['concurrency']:>4} {r['requests']:>5} {r['completed']:>5} {r['abandoned']:>5} "
            f"{r['refused_503']:>5} {r['server_dropped_unseen']:>7.0f} {r['server_computed']:>8.0f} "
            f"{r['transport_errors']:>6} {r['rps']:>7.2f} "
            f"{r['p50_s']:>6.3f} {r['p99_s']:>6.3f} {r['peak_rss_mib']:>12.0f}"
        )
    atomic_write_json(
        a.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "machine": platform.machine(),
            "beams": a.beams,
            "max_new_tokens": a.max_new_tokens,
            "results": results,
            "speedup_at_16": ours16 / naive16,
            "mixed": {"params": MIXED, "leave_after_s": LEAVE_AFTER_S, "results": mixed},
        },
    )


if __name__ == "__main__":
    main()
