"""Serving config: configs/serve/*.yaml checked into this dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from radreport.config import NonNegativeFloat, PositiveFloat, PositiveInt, range_problems
from radreport.generation import Beams, NewTokens


@dataclass(frozen=True)
class ServeConfig:
    device: str = "auto"
    """auto: cuda when present, else cpu."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """auto: bf16 on a GPU that has it (A10G), fp32 on CPU. Never fp16: T5 overflows."""
    max_batch_sequences: PositiveInt = 64
    """Decoder sequences per generation batch: a request holds num_beams of them (or num_return_sequences when
    sampling), so 8 requests at 10 beams cost what 80 greedy ones do. Sized from GPU memory (README, Serve)."""
    max_wait_ms: NonNegativeFloat = 10.0
    """How long the first request of a batch waits for company with the same generation parameters."""
    max_queue: PositiveInt = 256
    """Requests (one per /invocations input) waiting at most; beyond it 503 with Retry-After. Bounds memory."""
    request_timeout_s: PositiveFloat = 30.0
    """A request not answered by then gets 504 and its queued work is dropped."""
    body_timeout_s: PositiveFloat = 10.0
    """A client must send its whole request body within this; else 408 and the connection is closed."""
    max_body_bytes: PositiveInt = 65536
    """Request bodies over this get 413."""
    truncate_long_input: bool = True
    """Findings longer than the model's input: truncate and flag `truncated` (true), or answer 422 (false)."""
    max_num_beams: Beams = 16
    """Beams one request may ask for (the reference's client asks for 10)."""
    max_new_tokens_limit: NewTokens = 256
    """Tokens one request may ask to generate (max_new_tokens, or max_length on /invocations)."""
    max_return_sequences: Beams = 8
    """Candidates one request may ask for."""
    api_key: str = ""
    """When set, every route but /healthz, /readyz, /ping and /metrics needs `Authorization: Bearer KEY` or
    `X-API-Key: KEY`. Prefer api_key_file or the RADREPORT_API_KEY environment variable to a key in YAML."""
    api_key_file: str = ""
    """A file whose content (surrounding whitespace stripped) is the API key, e.g. a mounted secret."""
    docs: bool = False
    """Serve /docs and /redoc (their pages load scripts from a CDN). /openapi.json is always served."""
    warmup: bool = True
    """Run one generation before accepting requests, so the first client does not pay for lazy setup."""
    drain_timeout_s: NonNegativeFloat = 30.0
    """On SIGTERM: readiness fails and new requests get 503 at once; requests in flight get this long to finish
    (then 503), and the process exits within this plus a second."""

    def limits(self) -> dict[str, int]:
        """The most a request may ask for, by GenerationParams field."""
        return {
            "num_beams": self.max_num_beams,
            "max_new_tokens": self.max_new_tokens_limit,
            "num_return_sequences": self.max_return_sequences,
        }

    def check(self) -> list[str]:
        errors = range_problems(self)
        for k in ("max_num_beams", "max_return_sequences"):
            if getattr(self, k) > self.max_batch_sequences >= 1:
                errors.append(f"{k}: must be <= max_batch_sequences ({self.max_batch_sequences}): one request must fit")
        if self.api_key and self.api_key_file:
            errors.append("api_key, api_key_file: give the key one way, not both")
        return errors
