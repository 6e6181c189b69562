"""`mlx-albert serve`: its flags, and starting the server (mlx_albert.serve) on a bound socket.
Needs the `[serve]` extra (Starlette, uvicorn): `pip install ".[serve]"` from the repository."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys


def add_parser(sub) -> None:
    help = "a local HTTP server: OpenAI-compatible /v1/embeddings and every task (needs [serve])"
    p = sub.add_parser("serve", help=help, description=help)
    from ..serve.settings import Settings

    d = Settings()
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint folder or Hub repo id, or name=PATH (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (or MLX_ALBERT_API_KEY)"
    )
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="compute dtype")
    p.add_argument(
        "--max-wait-ms", type=float, default=d.max_wait_ms, help="how long a batch gathers requests (0: none)"
    )
    p.add_argument(
        "--max-batch-tokens", type=int, default=d.max_batch_tokens, help="tokens that close a batch early"
    )
    p.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="queued requests before 503 (Retry-After)"
    )
    p.add_argument("--max-inputs", type=int, default=d.max_inputs, help="inputs per request")
    p.add_argument("--max-input-chars", type=int, default=d.max_input_chars, help="characters per input")
    p.add_argument(
        "--max-body-bytes", type=int, default=d.max_body_bytes, help="request body size (413 above)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per forward pass")
    p.add_argument(
        "--grace-period",
        type=float,
        default=d.grace_period,
        help="seconds a stopping server (SIGTERM, Ctrl-C) keeps answering the requests it accepted; "
        "those still waiting then get a 503 (default %(default)g)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ImportError('mlx-albert serve needs its extra: pip install "mlx-albert[serve]"') from None

    from ..serve.app import build_app
    from ..serve.models import load_models, parse_specs
    from ..serve.settings import Settings

    key = args.api_key or os.environ.get("MLX_ALBERT_API_KEY") or None
    if not key and not _loopback(args.host):
        print(
            f"mlx-albert serve: warning: binding {args.host} without --api-key: anyone who can reach this "
            "machine can use the server",
            file=sys.stderr,
        )
    for name in (
        "max_queue",
        "max_inputs",
        "max_input_chars",
        "max_body_bytes",
        "batch_size",
        "max_batch_tokens",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if not args.grace_period >= 0:
        raise ValueError("--grace-period must be >= 0 seconds")
    models = load_models(parse_specs(args.model), args.dtype)
    settings = Settings(
        api_key=key,
        max_body_bytes=args.max_body_bytes,
        max_inputs=args.max_inputs,
        max_input_chars=args.max_input_chars,
        max_wait_ms=max(args.max_wait_ms, 0.0),
        max_batch_tokens=args.max_batch_tokens,
        max_queue=args.max_queue,
        batch_size=args.batch_size,
    )
    app = build_app(models, settings)
    logging.getLogger("mlx_albert.serve").setLevel(logging.INFO)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, keep-alive responses (headers and body written
    # apart) wait ~40 ms on the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts: none refused at start
    host, port = sock.getsockname()[:2]
    print(f"mlx-albert serve: http://{host}:{port} ({', '.join(models)})", file=sys.stderr, flush=True)
    from ..serve.server import serve

    serve(app, app.state.batcher, sock, args.grace_period)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
