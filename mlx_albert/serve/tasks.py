"""One endpoint per task of the registry that has a route: `{"model", "inputs", ...options}` in,
the task's answers out. Each request is checked by its task (options, inputs, and what it would
cost: tokens run and answers returned, both bounded), and long work runs in pieces of at most
max_batch_tokens, so other requests interleave and a client that left stops its work."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import Response

from ..tasks import Task
from .batcher import Batcher
from .errors import ApiError
from .models import ServedModel
from .requests import count, json_response, pick, read_json
from .settings import Settings


class TaskEndpoint:
    """POST {task.route}: the task's pipeline over a request's inputs, batched with other requests
    for the same model and options."""

    def __init__(self, task: Task, models: dict[str, ServedModel], settings: Settings, batcher: Batcher):
        self.task, self.models, self.settings, self.batcher = task, models, settings, batcher

    async def handle(self, request: Request):
        task = self.task
        body = task.request_inputs(await read_json(request, self.settings))
        served, inputs, options = self._parse(body)
        items = inputs if isinstance(inputs, list) else [inputs]
        costs = self._costs(served, items, options)
        key = (task.name, served.id, json.dumps(options, sort_keys=True))

        def run(batch: list) -> list:
            return task.predict(
                served.model, served.tokenizer, batch, batch_size=self.settings.batch_size, **options
            )

        results = []
        for piece in self._pieces(items, costs):
            answers = await submit_while_connected(
                request, self.batcher, key, run, piece, sum(costs[i] for i in piece.indices)
            )
            if answers is None:  # the client left: the rest of its work is dropped
                return Response(status_code=499)
            results += answers
        if isinstance(inputs, list):
            return json_response(results)
        return json_response(task.single_result(results[0], inputs, options))

    def _parse(self, body: dict) -> tuple[ServedModel, object, dict]:
        task = self.task
        unknown = set(body) - task.request_options - {"model", "inputs"}
        if unknown:
            name = sorted(unknown)[0]
            raise ApiError(400, f"unknown field {name!r}; allowed: {sorted(task.request_options)}", name)
        served = pick(self.models, body)
        if not served.supports(task):
            raise ApiError(
                400,
                f"model {served.id!r} is {type(served.model).__name__}: {task.route} needs a checkpoint "
                f"trained for {task.name}",
                "model",
            )
        if "inputs" not in body:
            raise ApiError(400, "missing field 'inputs'", "inputs")
        return served, body["inputs"], {k: v for k, v in body.items() if k in task.request_options}

    def _costs(self, served: ServedModel, items: list, options: dict) -> list[int]:
        """Each input's tokens, checked by the task; the request's tokens and answers within bounds."""
        settings = self.settings
        count(items, settings, "inputs")
        limits = served.limits(settings.max_input_chars)
        self.task.check_options(options, limits)
        costs = [self.task.check_request(item, options, limits) for item in items]
        tokens, answers = sum(c[0] for c in costs), sum(c[1] for c in costs)
        if tokens > settings.max_request_tokens:
            raise ApiError(
                400,
                f"the request would run {tokens} tokens (choices and context windows counted), over the "
                f"limit of {settings.max_request_tokens}: send fewer or shorter inputs",
                "inputs",
            )
        largest = max(c[0] for c in costs)
        if largest > settings.max_batch_tokens:  # one input is one piece of work: bound it
            raise ApiError(
                400,
                f"one input would run {largest} tokens (choices and context windows "
                f"counted), over the {settings.max_batch_tokens} the server runs at once "
                "(--max-batch-tokens): send a shorter context or fewer choices, or split the input",
                "inputs",
            )
        if answers > settings.max_answers:
            raise ApiError(
                400,
                f"the request would return {answers} answers, over the limit of {settings.max_answers}: "
                "lower top_k or send fewer inputs",
                "top_k" if "top_k" in options else "inputs",
            )
        return [c[0] for c in costs]

    def _pieces(self, items: list, costs: list[int]):
        """The items in order, in pieces of at most max_batch_tokens (one item at least each)."""
        piece, tokens = _Piece(), 0
        for i, (item, cost) in enumerate(zip(items, costs, strict=True)):
            if piece and tokens + cost > self.settings.max_batch_tokens:
                yield piece
                piece, tokens = _Piece(), 0
            piece.append(item)
            piece.indices.append(i)
            tokens += cost
        yield piece


async def submit_while_connected(request: Request, batcher: Batcher, key, run, items: list, tokens: int):
    """batcher.submit, cancelled (its job dropped from the queue) when the client disconnects
    while it waits; None then (also when it has left before)."""
    if await request.is_disconnected():
        return None
    job = asyncio.ensure_future(batcher.submit(key, run, items, tokens))
    while True:
        done, _ = await asyncio.wait({job}, timeout=0.25)
        if done:
            return job.result()
        if await request.is_disconnected():
            job.cancel()
            return None


class _Piece(list):
    """Some of a request's items, and their positions in it."""

    def __init__(self):
        super().__init__()
        self.indices: list[int] = []
