"""Running the app on uvicorn with an orderly stop: on SIGTERM (or Ctrl-C) the server stops
accepting connections, answers every request it already accepted, gives those still waiting when
the grace period ends a JSON 503, and exits 0 with one log line."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time

import uvicorn

from ..service import Batcher, Settings
from .protocol import protocol


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, whose exit drains the batcher instead of cancelling requests after a
    timeout (tracebacks) and re-raising the signal (a non-zero exit)."""

    def __init__(self, config: uvicorn.Config, batcher: Batcher, grace: float):
        super().__init__(config)
        self.batcher, self.grace = batcher, grace
        self.signal_name: str | None = None
        self.stopping_since: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit:  # a second signal: stop now
            self.force_exit = True
            return
        self.signal_name = signal.Signals(sig).name
        self.stopping_since = time.monotonic()
        self.should_exit = True  # uvicorn closes the listener and lets connections finish
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self.batcher.drain(self.grace)))


def serve(app, batcher: Batcher, sock: socket.socket, settings: Settings) -> None:
    """Serves `app` on the bound socket until a signal, then drains (see the module docstring)."""
    grace = settings.grace_period
    config = uvicorn.Config(
        app,
        http=protocol(settings.header_timeout, settings.max_connections),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=grace + 10,  # only backs ours up: by `grace` every request is answered
    )
    server = DrainingServer(config, batcher, grace)
    server.run(sockets=[sock])
    if server.signal_name is not None:
        seconds = time.monotonic() - server.stopping_since
        print(
            f"mlx-albert serve: stopped on {server.signal_name} after answering the requests in flight "
            f"({seconds:.1f} s; grace period {grace:g} s)",
            file=sys.stderr,
            flush=True,
        )
