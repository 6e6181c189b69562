"""The server's limits and batching knobs (importable without the [serve] extra: the CLI's parser
reads the defaults). Every limit bounds what one request, or one client, can cost the machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    api_key: str | None = None
    max_body_bytes: int = 4 << 20
    max_inputs: int = 2048  # per request (as OpenAI's /v1/embeddings allows)
    max_input_chars: int = 100_000  # per input; longer ones are refused, long ones truncated
    max_request_tokens: int = 131_072  # tokens one request may make the model run (choices, windows)
    max_answers: int = 10_000  # answers one request may return (fill-mask: masks x top_k)
    max_wait_ms: float = 5.0
    max_batch_tokens: int = 8192  # also the largest piece of one request's work run at once
    max_queue: int = 256  # requests waiting; more get 503
    max_connections: int = 1024  # open connections; more get 503 at once
    header_timeout: float = 10.0  # seconds for a request's head to arrive
    body_timeout: float = 30.0  # seconds for its body
    batch_size: int = 64  # rows per forward pass
    grace_period: float = 30.0  # seconds a stopping server answers accepted requests
    allowed_hosts: frozenset[str] | None = None  # Host values of a loopback server ("127.0.0.1:8080")
