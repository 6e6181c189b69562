"""A request's body read within its limit and parsed as one JSON object; an answer written as JSON."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from ..service import Settings
from .errors import ApiError, ClientGone, ServerFault


async def read_json(request: Request, settings: Settings) -> dict:
    """The body as a JSON object: 413 past max_body_bytes (declared or streamed), 408 when it does
    not arrive within body_timeout, 400 when it is not a JSON object."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is over {limit} bytes", kind="request_too_large")
    try:
        data = await asyncio.wait_for(_body(request, limit), settings.body_timeout)
    except TimeoutError:
        raise ApiError(
            408, f"the body did not arrive within {settings.body_timeout:g} s", kind="timeout"
        ) from None
    except ClientDisconnect:
        raise ClientGone() from None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes", kind="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(value) -> JSONResponse:
    """value as JSON; one holding NaN or infinity (the model overflowed) is the server's fault: a
    500, never invalid JSON."""
    try:
        return JSONResponse(value)
    except ValueError:
        raise ServerFault("the answer holds NaN or infinity: the model overflowed on this input") from None
