"""Serving config: configs/serve/*.yaml checked into this dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ServeConfig:
    device: str = "auto"
    """auto: cuda when present, else cpu."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """auto: bf16 on a GPU that has it (A10G), fp32 on CPU. Never fp16: T5 overflows."""
    max_batch_size: int = 8
    """Requests per beam-search batch; sized from GPU memory (see README, Serving)."""
    max_wait_ms: float = 10.0
    """How long the first request of a batch waits for company."""
    max_queue: int = 256
    """Requests waiting beyond this get 503 with Retry-After."""
    request_timeout_s: float = 30.0
    """A request not answered by then gets 504 and its work is dropped."""
    max_body_bytes: int = 65536
    truncate_long_input: bool = True
    """Findings longer than the model's input: truncate and flag `truncated` (true), or answer 422 (false)."""
    max_num_beams: int = 8
    max_new_tokens_limit: int = 256
    max_return_sequences: int = 8
    api_key: str = ""
    """When set, every route but health, readiness and /ping needs `Authorization: Bearer KEY` or `X-API-Key`."""
    warmup: bool = True
    drain_timeout_s: float = 30.0

    def check(self) -> list[str]:
        errors = [
            f"{k}: must be >= 1"
            for k in (
                "max_batch_size",
                "max_queue",
                "max_body_bytes",
                "max_num_beams",
                "max_new_tokens_limit",
                "max_return_sequences",
            )
            if getattr(self, k) < 1
        ]
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0:
            errors.append("max_wait_ms / request_timeout_s: must be positive")
        return errors
