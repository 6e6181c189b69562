"""Dynamic batching: concurrent requests for the same work are gathered for up to max_wait_ms (or
until max_batch_tokens) and run as one call on a single worker thread, off the event loop; each
request gets its own rows back. A bounded queue turns overload into an error the caller can answer
with 503 instead of letting latency grow without limit.

A call may return a `Deferred` (its graph built and queued with `mx.async_eval`): its results are
then read on a second thread while the worker already builds the next batch, so the device goes
from one batch to the next without waiting for Python (two batches in flight at most)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import mlx.core as mx

_arriving: contextvars.ContextVar[bool] = contextvars.ContextVar("arriving", default=False)


@dataclass
class Deferred:
    """What a batch call returns when its work is still running: `finish()` waits for it and gives
    one result per item."""

    finish: Callable[[], list]


class Overloaded(Exception):
    """The queue is full: the request should be retried later (HTTP 503 with Retry-After)."""


class ShuttingDown(Overloaded):
    """The server is stopping and its grace period ended before this request's turn (HTTP 503)."""


@dataclass(eq=False)
class _Job:
    key: Hashable  # jobs with equal keys may share one call
    fn: Callable[[list], list]  # items -> one result per item
    items: list
    tokens: int
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Collects jobs and runs them in batches on one worker thread (MLX runs one graph at a time)."""

    IN_FLIGHT = 2  # batches between the start of their call and their results: one runs, one waits

    def __init__(self, max_wait_ms: float, max_batch_tokens: int, max_queue: int, on_batch=None):
        self.max_wait = max_wait_ms / 1000
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda size, tokens: None)
        self.pending = 0  # jobs submitted and not answered
        self.incoming = 0  # requests on their way to submitting one
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx-albert")
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx-read")
        self._slots: asyncio.Semaphore | None = None
        self._finishing: set[asyncio.Task] = set()
        self._waiting: set[_Job] = set()  # submitted and not answered (for the end of a drain)
        self.draining = False

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.IN_FLIGHT)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        for thread in (self._worker, self._reader):
            # MLX streams are per thread; one left to the interpreter's exit, after a compiled
            # function ran on it, aborts the process (mlx 0.32: "terminate called without an
            # active exception", SIGABRT instead of exit 0)
            thread.submit(mx.clear_streams).result()
            thread.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self):
        """Marks a request that may submit a job soon: while any is on its way (being read, parsed,
        tokenised), a gathering batch waits for it (up to max_wait); when none is, the batch runs
        at once, so a lone request pays no waiting time."""
        self.incoming += 1
        token = _arriving.set(True)
        try:
            yield
        finally:
            if _arriving.get():
                self.incoming -= 1
            _arriving.reset(token)

    async def submit(self, key: Hashable, fn: Callable[[list], list], items: list, tokens: int) -> list:
        """Runs fn over `items`, batched with other jobs of the same key; returns this job's results."""
        if _arriving.get():
            self.incoming -= 1
            _arriving.set(False)
        if self.pending >= self.max_queue:
            raise Overloaded(f"{self.pending} requests are queued (the limit is {self.max_queue})")
        job = _Job(key, fn, items, tokens, asyncio.get_running_loop().create_future())
        self.pending += 1
        self._waiting.add(job)
        try:
            await self._queue.put(job)
            return await job.future
        finally:
            self.pending -= 1
            self._waiting.discard(job)

    async def drain(self, grace: float) -> None:
        """The server stops: every request already accepted is still answered, for `grace`
        seconds; after that, those still waiting get ShuttingDown (a 503)."""
        self.draining = True
        await asyncio.sleep(grace)
        error = ShuttingDown(f"the server is shutting down and its {grace:g} s grace period ended")
        for job in list(self._waiting):
            _settle(job.future, error=error)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # while both are taken, arrivals wait in the queue together
            batch = [await self._queue.get()]
            tokens = batch[0].tokens
            deadline = loop.time() + self.max_wait
            while self.max_wait > 0 and tokens < self.max_batch_tokens:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or self.incoming == 0:  # nobody else is on the way
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(job)
                tokens += job.tokens
            groups: dict[Hashable, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for i, jobs in enumerate(groups.values()):
                if i:
                    await self._slots.acquire()
                await self._run(loop, jobs)

    async def _run(self, loop, jobs: list[_Job], alone: bool = False) -> None:
        """Runs one group's call; its slot is released once its results are out (`alone`: a retry
        of one job inside a failed group, which holds no slot of its own)."""
        release = (lambda: None) if alone else self._slots.release
        jobs = [j for j in jobs if not j.future.done()]  # a client that went away
        if not jobs:
            release()
            return
        items = [x for j in jobs for x in j.items]
        self.on_batch(len(items), sum(j.tokens for j in jobs))
        try:
            results = await loop.run_in_executor(self._worker, jobs[0].fn, items)
        except Exception as e:
            await self._failed(loop, jobs, e)
            release()
            return
        if isinstance(results, Deferred):  # read on the reader thread; the loop gathers the next batch
            task = asyncio.create_task(self._finish(loop, jobs, results, release))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
            return
        self._answer(jobs, results)
        release()

    async def _finish(self, loop, jobs: list[_Job], deferred: Deferred, release: Callable) -> None:
        try:
            results = await loop.run_in_executor(self._reader, deferred.finish)
        except Exception as e:
            await self._failed(loop, jobs, e)
        else:
            self._answer(jobs, results)
        finally:
            release()

    async def _failed(self, loop, jobs: list[_Job], error: Exception) -> None:
        if len(jobs) == 1:
            _settle(jobs[0].future, error=error)
            return
        for job in jobs:  # one bad request must not take down the others: run each alone
            await self._run(loop, [job], alone=True)
            await asyncio.wait([job.future])  # a deferred retry is read before the next one starts

    @staticmethod
    def _answer(jobs: list[_Job], results: list) -> None:
        start = 0
        for job in jobs:
            _settle(job.future, result=results[start : start + len(job.items)])
            start += len(job.items)


def _settle(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
