"""uvicorn's HTTP protocol with the bounds a slow or greedy client must not get around: a
connection whose request head does not arrive within HEADER_TIMEOUT seconds (of connecting, or of
its previous response) is closed, and connections past the cap get a JSON 503 at once instead of
waiting in a queue nobody serves. Without httptools (the [serve] extra brings it) uvicorn's own
protocol runs, without these bounds."""

from __future__ import annotations

import json
import logging

logger = logging.getLogger("mlx_albert.serve")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover (httptools is part of the [serve] extra)
    HttpToolsProtocol = None


def protocol(header_timeout: float, max_connections: int):
    """The protocol class for uvicorn.Config(http=...), or "auto" without httptools."""
    if HttpToolsProtocol is None:
        return "auto"

    class BoundedProtocol(HttpToolsProtocol):
        _timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                _refuse(transport, max_connections)
                return
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head has the same deadline

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                client = "%s:%d" % self.client if self.client else "a client"
                logger.info("closed %s: no request head within %g s", client, header_timeout)
                self.transport.close()

    return BoundedProtocol


def _refuse(transport, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "message": f"the server holds {limit} connections, its limit: retry later",
                "type": "server_overloaded",
                "param": None,
                "code": None,
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()
