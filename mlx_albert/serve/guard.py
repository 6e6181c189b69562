"""The middleware every request passes: authentication, errors as OpenAI's JSON (a fault of the
server a 500, never a crash), one log line and the metrics."""

from __future__ import annotations

import logging
import time

from ..tasks import RequestError
from ..text import escape
from .batcher import Batcher, Overloaded, ShuttingDown
from .errors import ApiError, error_response
from .metrics import Metrics
from .settings import Settings

logger = logging.getLogger("mlx_albert.serve")


class Guard:
    """ASGI middleware around the app (see the module docstring)."""

    def __init__(self, app, settings: Settings, batcher: Batcher, metrics: Metrics, paths: set[str]):
        self.app, self.settings, self.batcher, self.metrics, self.paths = (
            app,
            settings,
            batcher,
            metrics,
            paths,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path, status = time.perf_counter(), scope["path"], {"code": 500}

        async def record(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, record)
        except Exception as e:  # never a crash: a 500 with the reason, the server keeps going
            await self._fail(e, path)(scope, receive, record)
        seconds = time.perf_counter() - start
        self.metrics.request(path if path in self.paths else "other", status["code"], seconds)
        logger.info("%s %s %d %.1f ms", scope["method"], escape(path)[:200], status["code"], seconds * 1e3)

    async def _handle(self, scope, receive, send) -> None:
        key = self.settings.api_key
        if key and scope["path"] != "/health" and not authorised(scope, key):
            raise ApiError(
                401, "a valid 'Authorization: Bearer <key>' header is required", None, "authentication_error"
            )
        if scope["method"] == "POST":
            with self.batcher.arriving():
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _fail(error: Exception, path: str):
        """The response to an error: the request's fault (4xx), overload (503), or the server's (500)."""
        if isinstance(error, ApiError):
            return error_response(error.status, error.message, error.param, error.kind)
        if isinstance(error, ShuttingDown):
            return error_response(503, f"{error}; retry elsewhere", None, "server_shutting_down")
        if isinstance(error, Overloaded):
            return error_response(
                503, f"the server is busy ({error}); retry", None, "server_overloaded", {"Retry-After": "1"}
            )
        if isinstance(error, RequestError):
            return error_response(400, str(error), error.param)
        if isinstance(error, ValueError | TypeError):  # the pipelines' own checks of one request's inputs
            return error_response(400, str(error))
        logger.exception("error on %s", escape(path)[:200])
        return error_response(500, f"{type(error).__name__}: {error}", None, "server_error")


def authorised(scope, key: str) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value.decode("latin-1") == f"Bearer {key}"
    return False
