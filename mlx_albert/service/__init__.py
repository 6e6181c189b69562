"""The server's work with no transport in it: the model pool (models.py), the batcher, the limits
(settings.py), and admission (admission.py: `admit(task, body)` -> a Job, or a typed error).
`Service` holds them; a door (serve/ for HTTP and the OpenAI protocol) reads a request, admits it
here, runs its job and writes the answer. Nothing here imports Starlette."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..tasks import RequestError, Task
from .admission import GONE, Job, ModelNotFound, admit
from .batcher import Batcher, Deferred, Overloaded, ShuttingDown
from .embeddings import Embedded, admit_embeddings
from .models import ServedModel
from .settings import Settings


class Service:
    """Models, limits and one batcher: admit a request, then run its job."""

    def __init__(self, models: dict[str, ServedModel], settings: Settings, on_batch=None):
        self.models, self.settings = models, settings
        self.batcher = Batcher(settings.max_wait_ms, settings.max_batch_tokens, settings.max_queue, on_batch)

    def admit(self, task: Task, body: dict) -> Job:
        """A task request (`{"model", "inputs", ...options}`) checked whole before any work."""
        return admit(task, body, self.models, self.settings)

    def admit_embeddings(self, body: dict, door_fields: frozenset = frozenset()) -> Job:
        """An embeddings request (`{"model", "input", "dimensions"}`) checked whole (`door_fields`:
        fields the door reads itself)."""
        return admit_embeddings(body, self.models, self.settings, door_fields)

    async def run(self, job: Job, gone: Callable[[], Awaitable[bool]] | None = None):
        """The job's answer, its pieces batched with other requests' work; GONE (its remaining
        work dropped from the queue) once `gone()` says the client left."""
        return await job.run(self.batcher, gone)


__all__ = [
    "GONE",
    "Batcher",
    "Deferred",
    "Embedded",
    "Job",
    "ModelNotFound",
    "Overloaded",
    "RequestError",
    "ServedModel",
    "Service",
    "Settings",
    "ShuttingDown",
    "admit",
    "admit_embeddings",
]
