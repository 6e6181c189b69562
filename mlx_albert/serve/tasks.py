"""One endpoint per task of the registry that has a route: `{"model", "inputs", ...options}` in,
the task's answers out, each request checked by the task before it is batched with others."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..tasks import Task
from .batcher import Batcher
from .errors import ApiError
from .models import ServedModel
from .requests import count, pick, read_json
from .settings import Settings


class TaskEndpoint:
    """POST {task.route}: the task's pipeline over a request's inputs, batched with other requests
    for the same model and options."""

    def __init__(self, task: Task, models: dict[str, ServedModel], settings: Settings, batcher: Batcher):
        self.task, self.models, self.settings, self.batcher = task, models, settings, batcher

    async def handle(self, request: Request):
        task, settings = self.task, self.settings
        body = task.request_inputs(await read_json(request, settings))
        unknown = set(body) - task.options - {"model", "inputs"}
        if unknown:
            name = sorted(unknown)[0]
            raise ApiError(400, f"unknown field {name!r}; allowed: {sorted(task.options)}", name)
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
        inputs = body["inputs"]
        items = inputs if isinstance(inputs, list) else [inputs]
        count(items, settings, "inputs")
        limits = served.limits(settings.max_input_chars)
        for item in items:
            task.check_request(item, limits)
        options = {k: v for k, v in body.items() if k in task.options}

        def run(batch: list) -> list:
            return task.predict(
                served.model, served.tokenizer, batch, batch_size=settings.batch_size, **options
            )

        key = (task.name, served.id, json.dumps(options, sort_keys=True))
        tokens = sum(len(json.dumps(item)) // 4 + 2 for item in items)  # a cheap estimate for batching
        results = await self.batcher.submit(key, run, items, tokens)
        if isinstance(inputs, list):
            return JSONResponse(results)
        return JSONResponse(task.single_result(results[0], inputs, options))
