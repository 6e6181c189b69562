"""Errors as OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, with their status."""

from __future__ import annotations

from starlette.responses import JSONResponse

from ..text import escape


class ApiError(Exception):
    """A request that gets a status other than 200 (the message goes to the client)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def error_response(
    status: int, message: str, param=None, kind="invalid_request_error", headers=None
) -> JSONResponse:
    body = {"error": {"message": escape(message), "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class ServerFault(RuntimeError):
    """The server's own fault (an answer it cannot write): HTTP 500, never blamed on the request."""


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""
