"""One generation at a time, the others queued first come first served; a gone client cancels its own.

The engine is not re-entrant (one model, one KV cache), so every generation runs on one worker
thread, in the order the requests arrived. A request waits in the queue until its turn; a client
that disconnects while waiting leaves the queue, and one that disconnects while generating cancels
that generation (the engine stops after the current token) so the next request starts at once.
Events cross from the worker thread to the event loop through an asyncio queue.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kimi_cli.conversation import Request

_DONE = object()
#: Yielded by `Scheduler.events` when nothing happened for `keepalive_s` (the caller may ping).
KEEPALIVE = object()


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


@dataclass(eq=False)
class Job:
    """One queued or running request; `cancel()` stops it after the current token."""

    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def cancel(self) -> None:
        """Ask the worker to stop this job (checked at its next event, so never another job)."""
        self.cancelled = True

    def put(self, item: Any) -> None:
        """Hand an item to the event loop (from the worker thread); a closed loop drops it."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass
class Stats:
    """Counters shown by `/health`."""

    completed: int = 0
    cancelled: int = 0
    failed: int = 0


class Scheduler:
    """Runs `engine.stream` for one request at a time on a worker thread, FIFO."""

    def __init__(self, engine: Any, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.stats = Stats()
        self.last_active = time.monotonic()
        self._jobs: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._running: Job | None = None
        self._closed = False
        threading.Thread(target=self._work, name="kimi-serve", daemon=True).start()

    @property
    def waiting(self) -> int:
        """Requests queued behind the running one."""
        return len(self._jobs)

    @property
    def busy(self) -> bool:
        """Whether a generation is running or waiting."""
        return self._running is not None or bool(self._jobs)

    def submit(self, request: Request) -> Job:
        """Queue `request`; raises `QueueFull` when `max_queue` requests are already waiting."""
        job = Job(request, asyncio.get_running_loop())
        with self._wake:
            if len(self._jobs) >= self.max_queue:
                raise QueueFull
            self._jobs.append(job)
            self._wake.notify()
        return job

    async def events(self, job: Job, keepalive_s: float | None = None) -> AsyncIterator[Any]:
        """The events of `job` once its turn comes, and `KEEPALIVE` after each quiet `keepalive_s`.

        Leaving early (the client went away) drops the job from the queue or cancels it. Only the
        queue's `get` is ever timed out, never this generator, so waiting long is not leaving.
        """
        try:
            while True:
                try:
                    item = await asyncio.wait_for(job.events.get(), keepalive_s)
                except asyncio.TimeoutError:
                    yield KEEPALIVE
                    continue
                if item is _DONE:
                    return
                yield item
        finally:
            self.abandon(job)

    def abandon(self, job: Job) -> None:
        """The consumer went away: drop a queued job, cancel a running one."""
        with self._wake:
            job.cancel()
            if job in self._jobs:
                self._jobs.remove(job)
            elif job is self._running:
                # Safe: the next job's stream() clears the engine's flag when it starts.
                self.engine.cancel()

    def close(self) -> None:
        """Stop the worker after the running job."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._running = self._jobs.popleft()
            try:
                self._generate(job)
            finally:
                with self._wake:
                    self._running = None
                self.last_active = time.monotonic()
                job.put(_DONE)

    def _generate(self, job: Job) -> None:
        from kimi_cli.events.types import ErrorEvent, Finished

        self.last_active = time.monotonic()
        stream = self.engine.stream(job.request)
        end = None
        try:
            for event in stream:
                if job.cancelled:
                    self.engine.cancel()  # also when it was cancelled before stream() cleared the flag
                if isinstance(event, (Finished, ErrorEvent)):
                    end = event
                job.put(event)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # joins the engine's worker if the stream ended early
        if isinstance(end, ErrorEvent):
            self.stats.failed += 1
        elif not isinstance(end, Finished) or end.stop_reason == "cancelled":
            self.stats.cancelled += 1
        else:
            self.stats.completed += 1
