"""The HTTP API (Starlette): OpenAI's `/v1/embeddings`, one endpoint per pipeline, `/v1/models`,
`/health` and `/metrics`. Every error is OpenAI's `{"error": {"message", "type", "param"}}` with
the matching status; requests are batched by `Batcher` and logged one line each."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ..pipelines import TASKS
from ..pipelines.embeddings import embed_ids
from ..runtime import clip_text
from ..text import escape
from .batcher import Batcher, Deferred, Overloaded, ShuttingDown
from .metrics import Metrics
from .models import ServedModel
from .settings import Settings

logger = logging.getLogger("mlx_albert.serve")

# endpoint -> (pipeline task, options a request may set)
TASK_ENDPOINTS = {
    "/v1/fill-mask": ("fill-mask", {"top_k", "targets"}),
    "/v1/classify": ("text-classification", {"top_k", "function_to_apply"}),
    "/v1/ner": ("token-classification", {"aggregation_strategy", "ignore_labels", "stride"}),
    "/v1/qa": (
        "question-answering",
        {
            "top_k",
            "doc_stride",
            "max_answer_len",
            "max_seq_len",
            "handle_impossible_answer",
            "align_to_words",
        },
    ),
    "/v1/multiple-choice": ("multiple-choice", set()),
}


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(status: int, message: str, param=None, kind="invalid_request_error", headers=None) -> JSONResponse:
    body = {"error": {"message": escape(message), "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(models: dict[str, ServedModel], settings: Settings) -> Starlette:
    """The ASGI application serving `models`."""
    metrics = Metrics()
    batcher = Batcher(settings.max_wait_ms, settings.max_batch_tokens, settings.max_queue, metrics.batch)

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise ApiError(413, f"the body is over {settings.max_body_bytes} bytes", kind="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(
                    413, f"the body is over {settings.max_body_bytes} bytes", kind="request_too_large"
                )
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    def pick(body: dict) -> ServedModel:
        name = body.get("model")
        if name is None:
            if len(models) == 1:
                return next(iter(models.values()))
            raise ApiError(400, f"several models are loaded: name one of {sorted(models)}", "model")
        if not isinstance(name, str) or name not in models:
            raise ApiError(
                404, f"no model {str(name)[:100]!r}; loaded: {sorted(models)}", "model", "not_found_error"
            )
        return models[name]

    def count(items: list) -> None:
        if not items:
            raise ApiError(400, "no inputs: pass at least one", "input")
        if len(items) > settings.max_inputs:
            raise ApiError(
                400, f"{len(items)} inputs is over the limit of {settings.max_inputs} per request", "input"
            )

    async def embeddings(request: Request):
        body = await read_json(request)
        unknown = set(body) - {"model", "input", "encoding_format", "dimensions", "user"}
        if unknown:
            raise ApiError(400, f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
        served = pick(body)
        texts, ids, truncated = _embedding_inputs(body.get("input"), served, settings, count)
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise ApiError(400, "encoding_format must be 'float' or 'base64'", "encoding_format")
        hidden = served.model.config.hidden_size
        dims = body.get("dimensions")
        if dims is not None and (
            isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= hidden
        ):
            raise ApiError(400, f"dimensions must be an integer in [1, {hidden}]", "dimensions")

        def run(items: list) -> list:
            """(vector, tokens, truncated) per item: texts are tokenised here, in one batch on the
            worker thread (the tokenizer's Rust threads, off the event loop)."""
            strings = [i for i, x in enumerate(items) if isinstance(x, str)]
            if strings:
                limit = served.max_length
                encoded, _ = served.tokenizer.encode(
                    [items[i] for i in strings], truncation=True, max_length=limit
                )
                items = list(items)
                for i, e in zip(strings, encoded, strict=True):
                    items[i] = (e.ids, bool(e.overflowing))
            pad = served.tokenizer.pad_token_id
            ids = [x[0] for x in items]
            vectors = embed_ids(
                served.model, ids, pad, served.pooling, served.normalize, settings.batch_size, deferred=True
            )
            # read on the batcher's reader thread while this one prepares the next batch
            return Deferred(lambda: [(v, len(x[0]), x[1]) for v, x in zip(vectors(), items, strict=True)])

        items = texts if texts else [(x, False) for x in ids]
        estimate = sum(len(x) // 4 + 2 for x in texts) + sum(map(len, ids))  # for the batch token limit
        answers = await batcher.submit(("embed", served.id), run, items, estimate)
        vectors = [a[0] for a in answers]
        tokens = sum(a[1] for a in answers)
        truncated += sum(a[2] for a in answers)
        data = []
        for i, v in enumerate(vectors):
            v = np.asarray(v, np.float32)
            if dims is not None and dims < hidden:
                v = v[:dims]
                if served.normalize:
                    v = v / max(float(np.linalg.norm(v)), 1e-12)
            out = base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": out})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "truncated_inputs": truncated}
        return JSONResponse({"object": "list", "data": data, "model": served.id, "usage": usage})

    def task_endpoint(path: str):
        task, allowed = TASK_ENDPOINTS[path]

        async def endpoint(request: Request):
            body = await read_json(request)
            if task == "question-answering" and "inputs" not in body and {"question", "context"} <= set(body):
                body["inputs"] = {"question": body.pop("question"), "context": body.pop("context")}
            unknown = set(body) - allowed - {"model", "inputs"}
            if unknown:
                raise ApiError(
                    400,
                    f"unknown field {sorted(unknown)[0]!r}; allowed: {sorted(allowed)}",
                    sorted(unknown)[0],
                )
            served = pick(body)
            if not served.supports(task):
                raise ApiError(
                    400,
                    f"model {served.id!r} is {type(served.model).__name__}: {path} needs a checkpoint "
                    f"trained for {task}",
                    "model",
                )
            if "inputs" not in body:
                raise ApiError(400, "missing field 'inputs'", "inputs")
            inputs = body["inputs"]
            single = not isinstance(inputs, list)
            items = [inputs] if single else inputs
            count(items)
            for item in items:
                _check_item(task, item, served, settings)
            options = {k: v for k, v in body.items() if k in allowed}
            key = (task, served.id, json.dumps(options, sort_keys=True))
            function = TASKS[task][0]

            def run(batch):
                return function(
                    served.model, served.tokenizer, batch, batch_size=settings.batch_size, **options
                )

            tokens = sum(len(json.dumps(item)) // 4 + 2 for item in items)  # a cheap estimate for batching
            results = await batcher.submit(key, run, items, tokens)
            if not single:
                return JSONResponse(results)
            legacy = task == "text-classification" and "top_k" not in options and isinstance(inputs, str)
            return JSONResponse([results[0]] if legacy else results[0])

        return endpoint

    async def list_models(request: Request):
        return JSONResponse({"object": "list", "data": [m.info() for m in models.values()]})

    async def retrieve_model(request: Request):  # the openai client's models.retrieve(id)
        name = request.path_params["model"]
        if name not in models:
            raise ApiError(
                404, f"no model {name[:100]!r}; loaded: {sorted(models)}", "model", "not_found_error"
            )
        return JSONResponse(models[name].info())

    async def health(request: Request):
        return JSONResponse({"status": "ok", "models": sorted(models), "queue": batcher.pending})

    async def prometheus(request: Request):
        return PlainTextResponse(metrics.render(batcher.pending), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *(Route(path, task_endpoint(path), methods=["POST"]) for path in TASK_ENDPOINTS),
    ]
    paths = {r.path for r in routes}

    class Guard:
        """Auth, errors as OpenAI's JSON, one log line and the metrics for every request."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            start, path, status = time.perf_counter(), scope["path"], {"code": 500}

            async def record(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                if settings.api_key and path != "/health" and not _authorised(scope, settings.api_key):
                    raise ApiError(
                        401,
                        "a valid 'Authorization: Bearer <key>' header is required",
                        None,
                        "authentication_error",
                    )
                if scope["method"] == "POST":
                    with batcher.arriving():
                        await self.app(scope, receive, record)
                else:
                    await self.app(scope, receive, record)
            except ApiError as e:
                await _error(e.status, e.message, e.param, e.kind)(scope, receive, record)
            except ShuttingDown as e:
                response = _error(503, f"{e}; retry elsewhere", None, "server_shutting_down")
                await response(scope, receive, record)
            except Overloaded as e:
                response = _error(
                    503, f"the server is busy ({e}); retry", None, "server_overloaded", {"Retry-After": "1"}
                )
                await response(scope, receive, record)
            except (ValueError, TypeError) as e:  # the pipelines' own checks of one request's inputs
                await _error(400, str(e))(scope, receive, record)
            except Exception as e:  # never a crash: a 500 with the reason, the server keeps going
                logger.exception("error on %s", escape(path)[:200])
                await _error(500, f"{type(e).__name__}: {e}", None, "server_error")(scope, receive, record)
            seconds = time.perf_counter() - start
            metrics.request(path if path in paths else "other", status["code"], seconds)
            logger.info(
                "%s %s %d %.1f ms", scope["method"], escape(path)[:200], status["code"], seconds * 1e3
            )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    async def not_found(request: Request, exc):
        return _error(
            exc.status_code, f"no endpoint {request.method} {request.url.path}", None, "not_found_error"
        )

    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard)],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.batcher = batcher
    return app


def _authorised(scope, key: str) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value.decode("latin-1") == f"Bearer {key}"
    return False


def _embedding_inputs(value, served: ServedModel, settings: Settings, count):
    """OpenAI's `input`: a string, a list of strings, a list of token ids or a list of such lists;
    -> (texts, cut after their first 2 x max_length words; or token ids per input, truncated to the
    model; how many ids inputs were truncated). Texts are tokenised later, batched."""
    limit, vocab = served.max_length, served.model.config.vocab_size

    def is_ids(x):
        return isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(value, str):
        value = [value]
    elif is_ids(value):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(400, "input must be a string, a list of strings or a list of token id lists", "input")
    count(value)
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


def _check_item(task: str, item, served: ServedModel, settings: Settings) -> None:
    """A request's input checked before it is batched with others (types, sizes, the mask)."""

    def text(x, what="inputs") -> str:
        if not isinstance(x, str) or not x.strip():
            raise ApiError(400, f"{what} must be a non-empty string", "inputs")
        if len(x) > settings.max_input_chars:
            raise ApiError(
                400, f"an input has {len(x)} characters; the limit is {settings.max_input_chars}", "inputs"
            )
        return x

    if task in ("fill-mask", "token-classification"):
        text(item)
        if task == "fill-mask":
            front = served.front  # not the worker's tokenizer: encode changes its settings
            ids = front(clip_text(item, served.max_length), truncation=True, max_length=served.max_length)
            if front.mask_token_id not in ids["input_ids"]:
                raise ApiError(
                    400,
                    f"no {front.mask_token} within the model's first {served.max_length} tokens",
                    "inputs",
                )
    elif task == "text-classification":
        if isinstance(item, dict) and set(item) <= {"text", "text_pair"} and "text" in item:
            text(item["text"])
            if "text_pair" in item:
                text(item["text_pair"], "text_pair")
        else:
            text(item)
    elif task == "question-answering":
        if not isinstance(item, dict) or set(item) != {"question", "context"}:
            raise ApiError(400, "each input must be {'question': ..., 'context': ...}", "inputs")
        text(item["question"], "question")
        text(item["context"], "context")
    elif task == "multiple-choice":
        if not isinstance(item, dict) or set(item) != {"question", "choices"}:
            raise ApiError(400, "each input must be {'question': ..., 'choices': [...]}", "inputs")
        text(item["question"], "question")
        if not isinstance(item["choices"], list) or not item["choices"]:
            raise ApiError(400, "choices must be a non-empty list of strings", "inputs")
        for choice in item["choices"]:
            text(choice, "a choice")
