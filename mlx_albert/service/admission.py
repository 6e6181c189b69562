"""Admission: a request's body checked whole by its task (fields, model, options, inputs and what it
would cost: tokens run and answers returned, both bounded) before any work, and turned into a Job
whose work runs in pieces of at most max_batch_tokens, so other requests interleave and a client
that left stops its work. Errors are typed: RequestError (the request is wrong, naming the field),
ModelNotFound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from ..tasks import RequestError, Task
from .batcher import Batcher
from .models import ServedModel
from .settings import Settings


class ModelNotFound(RequestError):
    """The request names a model the service does not hold (HTTP 404)."""

    def __init__(self, message: str):
        super().__init__(message, "model")


class _Gone:
    def __repr__(self) -> str:
        return "GONE"


GONE = _Gone()  # what a job answers when its client left before the end


@dataclass
class Job:
    """An admitted request: `work` (items -> one answer each, on the worker thread) over `pieces`
    ((items, tokens) in order), batched by `key` with other jobs, and `finish` (every answer, in
    order -> the request's answer)."""

    key: Hashable
    work: Callable[[list], list]
    pieces: list[tuple[list, int]]
    finish: Callable[[list], object]

    async def run(self, batcher: Batcher, gone: Callable[[], Awaitable[bool]] | None = None):
        answers = []
        for items, tokens in self.pieces:
            part = await submit_until_gone(batcher, self.key, self.work, items, tokens, gone)
            if part is GONE:  # the client left: the rest of its work is dropped
                return GONE
            answers += part
        return self.finish(answers)


async def submit_until_gone(batcher: Batcher, key, work, items: list, tokens: int, gone=None):
    """batcher.submit, cancelled (its job dropped from the queue) when `gone()` says the client left
    while it waits; GONE then (also when it had left before)."""
    if gone is None:
        return await batcher.submit(key, work, items, tokens)
    if await gone():
        return GONE
    job = asyncio.ensure_future(batcher.submit(key, work, items, tokens))
    while True:
        done, _ = await asyncio.wait({job}, timeout=0.25)
        if done:
            return job.result()
        if await gone():
            job.cancel()
            return GONE


def pick(models: dict[str, ServedModel], body: dict) -> ServedModel:
    """The model a request names (or the only one held)."""
    name = body.get("model")
    if name is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise RequestError(f"several models are loaded: name one of {sorted(models)}", "model")
    if not isinstance(name, str) or name not in models:
        raise ModelNotFound(f"no model {str(name)[:100]!r}; loaded: {sorted(models)}")
    return models[name]


def count(items: list, settings: Settings, param: str = "input") -> None:
    if not items:
        raise RequestError("no inputs: pass at least one", param)
    if len(items) > settings.max_inputs:
        raise RequestError(
            f"{len(items)} inputs is over the limit of {settings.max_inputs} per request", param
        )


def admit(task: Task, body: dict, models: dict[str, ServedModel], settings: Settings) -> Job:
    """A task request, `{"model", "inputs", ...options}`, as a Job answering with the task's
    answers (one, or a list for a list of inputs), or a RequestError naming what is wrong."""
    body = task.request_inputs(body)
    unknown = set(body) - task.request_options - {"model", "inputs"}
    if unknown:
        name = sorted(unknown)[0]
        raise RequestError(f"unknown field {name!r}; allowed: {sorted(task.request_options)}", name)
    served = pick(models, body)
    if not served.supports(task):
        raise RequestError(
            f"model {served.id!r} is {type(served.model).__name__}: {task.route or task.name} needs a "
            f"checkpoint trained for {task.name}",
            "model",
        )
    if "inputs" not in body:
        raise RequestError("missing field 'inputs'", "inputs")
    inputs = body["inputs"]
    options = {k: v for k, v in body.items() if k in task.request_options}
    items = inputs if isinstance(inputs, list) else [inputs]
    costs = _costs(task, served, items, options, settings)

    def work(batch: list) -> list:
        return task.predict(served.model, served.tokenizer, batch, batch_size=settings.batch_size, **options)

    def finish(answers: list):
        return answers if isinstance(inputs, list) else task.single_result(answers[0], inputs, options)

    key = (task.name, served.id, json.dumps(options, sort_keys=True))
    return Job(key, work, pieces(items, costs, settings.max_batch_tokens), finish)


def _costs(task: Task, served: ServedModel, items: list, options: dict, settings: Settings) -> list[int]:
    """Each input's tokens, checked by the task; the request's tokens and answers within bounds."""
    count(items, settings, "inputs")
    limits = served.limits(settings.max_input_chars)
    task.check_options(options, limits)
    costs = [task.check_request(item, options, limits) for item in items]
    tokens, answers = sum(c[0] for c in costs), sum(c[1] for c in costs)
    if tokens > settings.max_request_tokens:
        raise RequestError(
            f"the request would run {tokens} tokens (choices and context windows counted), over the "
            f"limit of {settings.max_request_tokens}: send fewer or shorter inputs"
        )
    largest = max(c[0] for c in costs)
    if largest > settings.max_batch_tokens:  # one input is one piece of work: bound it
        raise RequestError(
            f"one input would run {largest} tokens (choices and context windows "
            f"counted), over the {settings.max_batch_tokens} the server runs at once "
            "(--max-batch-tokens): send a shorter context or fewer choices, or split the input"
        )
    if answers > settings.max_answers:
        raise RequestError(
            f"the request would return {answers} answers, over the limit of {settings.max_answers}: "
            "lower top_k or send fewer inputs",
            "top_k" if "top_k" in options else "inputs",
        )
    return [c[0] for c in costs]


def pieces(items: list, costs: list[int], max_tokens: int) -> list[tuple[list, int]]:
    """The items in order, in pieces of at most max_tokens (one item at least each)."""
    out, piece, tokens = [], [], 0
    for item, cost in zip(items, costs, strict=True):
        if piece and tokens + cost > max_tokens:
            out.append((piece, tokens))
            piece, tokens = [], 0
        piece.append(item)
        tokens += cost
    out.append((piece, tokens))
    return out
