"""Prometheus metrics, one registry per app (two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "impression_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "impression_request_seconds",
            "Request latency",
            ["route"],
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "impression_batch_size",
            "Jobs (one per findings text) per generation batch",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.batch_sequences = Histogram(
            "impression_batch_sequences",
            "Decoder sequences (beams or samples) per generation batch",
            registry=r,
            buckets=(1, 4, 8, 16, 32, 64, 80, 128, 256),
        )
        self.queue_depth = Gauge(
            "impression_queue_depth", "Jobs (one per findings text) waiting for a batch", registry=r
        )
        self.dropped = Counter(
            "impression_jobs_dropped",
            "Queued jobs removed before any compute, by reason (client_gone, timeout, shutdown)",
            ["reason"],
            registry=r,
        )
        for reason in ("client_gone", "timeout", "shutdown"):
            self.dropped.labels(reason)  # exported at 0 from the start, so a rate() has a baseline
        self.input_tokens = Counter("impression_input_tokens", "Prompt tokens processed", registry=r)
        self.output_tokens = Counter("impression_output_tokens", "Tokens generated (best candidate)", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
