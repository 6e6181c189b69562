"""The HTTP adapters over the service: read the body, admit it (service/admission.py), run its job
while the client is connected, write the answer. OpenAI's /v1/embeddings writes vectors as float
lists or base64 of little-endian float32, with `usage`."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..service import GONE, Service
from ..tasks import RequestError, Task
from .requests import json_response, read_json

EMBEDDINGS_FIELDS = frozenset({"encoding_format", "user"})  # OpenAI's, read here


def task_endpoint(service: Service, task: Task):
    """POST {task.route}: `{"model", "inputs", ...options}` in, the task's answers out."""

    async def handle(request: Request):
        job = service.admit(task, await read_json(request, service.settings))
        answer = await service.run(job, request.is_disconnected)
        return Response(status_code=499) if answer is GONE else json_response(answer)

    return handle


def embeddings_endpoint(service: Service):
    """POST /v1/embeddings in OpenAI's shape."""

    async def handle(request: Request):
        body = await read_json(request, service.settings)
        job = service.admit_embeddings(body, EMBEDDINGS_FIELDS)
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise RequestError("encoding_format must be 'float' or 'base64'", "encoding_format")
        answer = await service.run(job, request.is_disconnected)
        if answer is GONE:
            return Response(status_code=499)
        data = [
            {"object": "embedding", "index": i, "embedding": encode(v, fmt)}
            for i, v in enumerate(answer.vectors)
        ]
        tokens = answer.tokens
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": answer.truncated}
        return json_response({"object": "list", "data": data, "model": answer.model, "usage": usage})

    return handle


def encode(vector: np.ndarray, fmt: str):
    """A float32 vector as OpenAI writes it: a float list, or base64 of little-endian float32."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode() if fmt == "base64" else vector.tolist()
