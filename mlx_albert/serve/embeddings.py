"""POST /v1/embeddings in OpenAI's shape, through the model's SentenceEncoder (the embed task's
path): strings or token id lists in, float or base64 vectors out, `dimensions` by truncation then
re-normalisation as OpenAI does, and `usage`."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..runtime import clip_text
from .batcher import Batcher, Deferred
from .errors import ApiError
from .models import ServedModel
from .requests import count, json_response, pick, read_json
from .settings import Settings
from .tasks import submit_while_connected

FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


class Embeddings:
    def __init__(self, models: dict[str, ServedModel], settings: Settings, batcher: Batcher):
        self.models, self.settings, self.batcher = models, settings, batcher

    async def handle(self, request: Request):
        body = await read_json(request, self.settings)
        unknown = set(body) - FIELDS
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
        served = pick(self.models, body)
        texts, ids, truncated = inputs(body.get("input"), served, self.settings)
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'", "encoding_format")
        width = served.encoder.dimension
        dims = body.get("dimensions")
        if dims is not None and (
            isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= width
        ):
            raise ApiError(400, f"dimensions must be an integer in [1, {width}]", "dimensions")
        items = texts if texts else [(x, False) for x in ids]
        estimate = sum(len(x) // 4 + 2 for x in texts) + sum(map(len, ids))  # for the batch token limit
        answers = await submit_while_connected(
            request, self.batcher, ("embed", served.id), self._run(served), items, estimate
        )
        if answers is None:  # the client left
            return Response(status_code=499)
        data = [
            {"object": "embedding", "index": i, "embedding": encode(a[0], dims, fmt)}
            for i, a in enumerate(answers)
        ]
        tokens = sum(a[1] for a in answers)
        truncated += sum(a[2] for a in answers)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": truncated}
        return json_response({"object": "list", "data": data, "model": served.id, "usage": usage})

    def _run(self, served: ServedModel):
        encoder, batch_size = served.encoder, self.settings.batch_size

        def run(items: list):
            """(vector, tokens, truncated) per item: texts are tokenised here, in one batch on the
            worker thread (the tokenizer's Rust threads, off the event loop)."""
            texts = [i for i, x in enumerate(items) if isinstance(x, str)]
            if texts:
                ids, cut, _ = encoder.tokenize([items[i] for i in texts])
                items = list(items)
                for i, row, was_cut in zip(texts, ids, cut, strict=True):
                    items[i] = (row, was_cut)
            vectors = encoder.encode_ids_deferred([x[0] for x in items], batch_size)
            # read on the batcher's reader thread while this one prepares the next batch
            return Deferred(lambda: [(v, len(x[0]), x[1]) for v, x in zip(vectors(), items, strict=True)])

        return run


def encode(vector, dims: int | None, fmt: str):
    """One vector as OpenAI answers it: cut to `dimensions` and scaled back to unit length, then
    float lists or base64 of little-endian float32."""
    v = np.asarray(vector, np.float32)
    if dims is not None and dims < v.shape[0]:
        v = v[:dims] / max(float(np.linalg.norm(v[:dims])), 1e-12)
    return base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()


def inputs(value, served: ServedModel, settings: Settings):
    """OpenAI's `input`: a string, a list of strings, a list of token ids or a list of such lists
    -> (texts cut after their first 2 x max_length words, or token ids per input cut to the model,
    and how many of those were cut). Token ids are the model's input as given (include [CLS] and
    [SEP], as the tokenizer returns them). Texts are tokenised later, batched."""
    limit, vocab = served.encoder.max_seq_length, served.model.config.vocab_size

    def is_ids(x):
        return isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(value, str) or is_ids(value):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(400, "input must be a string, a list of strings or a list of token id lists", "input")
    count(value, settings)
    texts, truncated, ids = [], 0, []
    for i, item in enumerate(value):
        if isinstance(item, str):
            if len(item) > settings.max_input_chars:
                raise ApiError(
                    400,
                    f"input {i} has {len(item)} characters; the limit is {settings.max_input_chars}",
                    "input",
                )
            texts.append(clip_text(item, limit))
        elif is_ids(item):
            if min(item) < 0 or max(item) >= vocab:
                raise ApiError(400, f"input {i} holds token ids outside [0, {vocab})", "input")
            truncated += len(item) > limit
            ids.append(item[:limit])
        else:
            raise ApiError(400, f"input {i} is neither a string nor a list of token ids", "input")
    if texts and ids:
        raise ApiError(400, "input mixes strings and token ids", "input")
    return texts, ids, truncated
