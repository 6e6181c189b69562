"""The HTTP API (Starlette): OpenAI's `/v1/embeddings` and `/v1/models`, one endpoint per task of
the registry that has a route, `/health` and `/metrics`. Every error is OpenAI's JSON with the
matching status (guard.py); the work is the service's (mlx_albert.service), and each request is
logged in one line."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from ..service import Batcher, ServedModel, Service, Settings
from ..tasks import TASKS
from .endpoints import embeddings_endpoint, task_endpoint
from .errors import ApiError, error_response
from .guard import Guard
from .metrics import Metrics


class Info:
    """GET /v1/models (and /v1/models/{id}, the openai client's models.retrieve), /health, /metrics."""

    def __init__(self, models: dict[str, ServedModel], batcher: Batcher, metrics: Metrics):
        self.models, self.batcher, self.metrics = models, batcher, metrics

    async def models_list(self, request: Request):
        return JSONResponse({"object": "list", "data": [m.info() for m in self.models.values()]})

    async def model(self, request: Request):
        name = request.path_params["model"]
        if name not in self.models:
            raise ApiError(
                404, f"no model {name[:100]!r}; loaded: {sorted(self.models)}", "model", "not_found_error"
            )
        return JSONResponse(self.models[name].info())

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "models": sorted(self.models), "queue": self.batcher.pending})

    async def prometheus(self, request: Request):
        return PlainTextResponse(
            self.metrics.render(self.batcher.pending), media_type="text/plain; version=0.0.4"
        )


async def not_found(request: Request, exc):
    return error_response(
        exc.status_code, f"no endpoint {request.method} {request.url.path}", None, "not_found_error"
    )


def build_app(models: dict[str, ServedModel], settings: Settings) -> Starlette:
    """The ASGI application serving `models`."""
    metrics = Metrics()
    service = Service(models, settings, metrics.batch)
    batcher = service.batcher
    info = Info(models, batcher, metrics)
    routes = [
        Route("/v1/embeddings", embeddings_endpoint(service), methods=["POST"]),
        Route("/v1/models", info.models_list, methods=["GET"]),
        Route("/v1/models/{model:path}", info.model, methods=["GET"]),
        Route("/health", info.health, methods=["GET"]),
        Route("/metrics", info.prometheus, methods=["GET"]),
        *(Route(t.route, task_endpoint(service, t), methods=["POST"]) for t in TASKS if t.route),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    paths = {r.path for r in routes}
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, settings=settings, batcher=batcher, metrics=metrics, paths=paths)],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.batcher = batcher
    return app
