"""The server's limits and batching knobs (importable without the [serve] extra: the CLI's parser
reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    api_key: str | None = None
    max_body_bytes: int = 4 << 20
    max_inputs: int = 256  # per request
    max_input_chars: int = 100_000  # per input; longer ones are refused, long ones truncated
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 8192
    max_queue: int = 256  # requests waiting; more get 503
    batch_size: int = 64  # rows per forward pass
    grace_period: float = 30.0  # seconds a stopping server answers accepted requests
