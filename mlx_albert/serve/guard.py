"""The middleware every request passes: authentication (or, without a key, same-origin only),
errors as OpenAI's JSON (a fault of the server a 500, never a crash, never blamed on the request),
one log line and the metrics."""

from __future__ import annotations

import hmac
import logging
import time

from ..service import Batcher, ModelNotFound, Overloaded, RequestError, Settings, ShuttingDown
from ..text import escape
from .errors import ApiError, ClientGone, ServerFault, error_response
from .metrics import Metrics

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
        except ClientGone:
            status["code"] = 499  # nginx's "client closed request": logged, nobody to answer
        except Exception as e:  # never a crash: the reason in JSON, the server keeps going
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
        if not key:
            self._same_origin(scope)
        if scope["method"] == "POST":
            with self.batcher.arriving():
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _same_origin(self, scope) -> None:
        """Without a key, only this machine's own clients may call: a web page elsewhere (or a
        DNS-rebound name for it) is neither the Host nor the Origin, and cannot send a JSON body
        without a CORS preflight, which this server never grants."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        hosts = self.settings.allowed_hosts
        if hosts is not None and headers.get("host", "").lower() not in hosts:
            raise ApiError(
                403,
                "this server answers requests addressed to its own address only",
                None,
                "permission_error",
            )
        origin = headers.get("origin")
        if origin is not None and (hosts is None or origin.lower().removeprefix("http://") not in hosts):
            raise ApiError(
                403,
                "cross-origin requests are refused (start the server with --api-key for them)",
                None,
                "permission_error",
            )
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] == "POST" and kind != "application/json":
            raise ApiError(415, "send the body as JSON, with 'Content-Type: application/json'", None)

    @staticmethod
    def _fail(error: Exception, path: str):
        """The response to an error: the request's fault (4xx), overload (503), or the server's (500)."""
        if isinstance(error, ApiError):
            headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
            return error_response(error.status, error.message, error.param, error.kind, headers)
        if isinstance(error, ShuttingDown):
            return error_response(503, f"{error}; retry elsewhere", None, "server_shutting_down")
        if isinstance(error, Overloaded):
            return error_response(
                503, f"the server is busy ({error}); retry", None, "server_overloaded", {"Retry-After": "1"}
            )
        if isinstance(error, ServerFault):
            logger.error("server fault on %s: %s", escape(path)[:200], error)
            return error_response(500, str(error), None, "server_error")
        if isinstance(error, ModelNotFound):
            return error_response(404, str(error), error.param, "not_found_error")
        if isinstance(error, RequestError):
            return error_response(400, str(error), error.param)
        if isinstance(error, ValueError | TypeError):  # the pipelines' own checks of one request's inputs
            return error_response(400, str(error))
        logger.exception("error on %s", escape(path)[:200])
        return error_response(500, f"{type(error).__name__}: {error}", None, "server_error")


def authorised(scope, key: str) -> bool:
    """`Authorization: Bearer <key>` (the scheme in any case), compared in constant time."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), key.encode())
    return False
