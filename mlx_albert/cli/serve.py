"""`mlx-albert serve`: its flags, and starting the server (mlx_albert.serve) on a bound socket.
Needs the `[serve]` extra (Starlette, uvicorn): `pip install ".[serve]"` from the repository."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys

# Settings field -> (type, help): each is a flag (--max-queue for max_queue), default from Settings.
LIMITS = {
    "max_wait_ms": (float, "how long a batch gathers requests (0: none)"),
    "max_batch_tokens": (
        int,
        "tokens that close a batch early; also the largest piece of a request run at once",
    ),
    "max_queue": (int, "queued requests before 503 (Retry-After)"),
    "max_inputs": (int, "inputs per request"),
    "max_input_chars": (int, "characters per input"),
    "max_request_tokens": (int, "tokens one request may make the model run (choices and windows counted)"),
    "max_answers": (int, "answers one request may return (fill-mask: masks x top_k)"),
    "max_body_bytes": (int, "request body size (413 above)"),
    "max_connections": (int, "open connections; more are answered 503 at once"),
    "header_timeout": (float, "seconds for a request's head to arrive before the connection is closed"),
    "body_timeout": (float, "seconds for a request's body to arrive (408 after)"),
    "batch_size": (int, "rows per forward pass"),
    "grace_period": (
        float,
        "seconds a stopping server (SIGTERM, Ctrl-C) keeps answering the requests it accepted; those still "
        "waiting then get a 503",
    ),
}


def add_parser(sub) -> None:
    from ..service.settings import Settings

    help = "a local HTTP server: OpenAI-compatible /v1/embeddings and every task (needs [serve])"
    p = sub.add_parser("serve", help=help, description=help)
    defaults = Settings()
    p.add_argument(
        "--model",
        action="append",
        required=True,
        help="checkpoint, repo id or pydoc-small, or name=PATH (repeatable)",
    )
    p.add_argument(
        "--adapter-path",
        action="append",
        default=[],
        help="LoRA adapters merged onto --model (one model), or name=PATH onto that model (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (or MLX_ALBERT_API_KEY)"
    )
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="compute dtype")
    for name, (kind, text) in LIMITS.items():
        default = getattr(defaults, name)
        p.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"{text} (default {default:g})"
        )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ImportError(
            'mlx-albert serve needs its extra: pip install "mlx-albert[serve]" '
            '(or pip install ".[serve]" in a checkout)'
        ) from None
    from ..serve.app import build_app
    from ..serve.server import serve
    from ..service.models import load_models, parse_adapters, parse_specs
    from ..service.settings import Settings

    key = args.api_key or os.environ.get("MLX_ALBERT_API_KEY") or None
    if not key and not _loopback(args.host):
        print(
            f"mlx-albert serve: warning: binding {args.host} without --api-key: anyone who can reach this "
            "machine can use the server",
            file=sys.stderr,
        )
    limits = {name: getattr(args, name) for name in LIMITS}
    for name, value in limits.items():
        if not (value >= 0 if name in ("max_wait_ms", "grace_period") else value > 0):
            raise ValueError(
                f"--{name.replace('_', '-')} must be {'>= 0' if 'wait' in name or 'grace' in name else '> 0'}"
            )
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port: use 0 to 65535 (0 picks a free one)")
    sock = _bind(args.host, args.port)  # before loading models: a taken port is said at once
    host, port = sock.getsockname()[:2]
    hosts = _loopback_hosts(port) if _loopback(args.host) else None
    settings = Settings(api_key=key, allowed_hosts=hosts, **limits)
    specs = parse_specs(args.model)
    models = load_models(specs, args.dtype, parse_adapters(args.adapter_path, specs))
    app = build_app(models, settings)
    logging.getLogger("mlx_albert.serve").setLevel(logging.INFO)
    print(f"mlx-albert serve: http://{host}:{port} ({', '.join(models)})", file=sys.stderr, flush=True)
    serve(app, app.state.batcher, sock, settings)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, keep-alive responses (headers and body written
    # apart) wait ~40 ms on the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts: none refused at start
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_hosts(port: int) -> frozenset[str]:
    """The Host values a loopback server answers: its loopback names, with and without the port."""
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset([*names, *(f"{n}:{port}" for n in names)])
