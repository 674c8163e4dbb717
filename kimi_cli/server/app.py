"""The ASGI app of `kimi serve` (Starlette): `/v1/chat/completions`, `/v1/models`, `/health`.

Every refusal is an OpenAI-style JSON error with a 4xx status (400 bad JSON or images, 401 key,
404 model or route, 413 body or image too large, 422 invalid fields, 503 queue full); an unexpected
failure is a JSON 500 without a traceback. The server speaks HTTP and never prints Rich output.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from kimi_cli.conversation import GenerationSettings
from kimi_cli.engine.wire import WireError
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, ThinkingDelta
from kimi_cli.server.config import ServeConfig
from kimi_cli.server.protocol import (
    ChatCall,
    Reply,
    StopMatcher,
    error_body,
    finish_reason,
    fit_context,
    parse_chat,
    thinking_delta,
)
from kimi_cli.server.scheduler import KEEPALIVE, Job, QueueFull, Scheduler

#: A comment line sent while a request waits, so that a client that went away is noticed.
KEEPALIVE_S = 5.0


@dataclass(frozen=True)
class Served:
    """What the server serves: the model's ids, its context length, the instance id for /health."""

    model_id: str
    aliases: tuple[str, ...]
    context_length: int
    instance: str
    defaults: GenerationSettings
    tokens: tuple[str, ...] | None  # accepted bearer tokens; None: no key needed (--insecure-no-key)
    #: Counts a request's prompt tokens (None: not checked against the context length).
    count_prompt: Callable[[Any], int] | None = None


def create_app(served: Served, config: ServeConfig, scheduler: Scheduler,
               lifespan: Callable[[Any], Any] | None = None) -> Any:
    """The Starlette application."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    api = _Api(served, config, scheduler)
    routes = [Route("/health", api.health, methods=["GET"]),
              Route("/v1/models", api.guard(api.models), methods=["GET"]),
              Route("/v1/chat/completions", api.guard(api.chat), methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: _http_exception, WireError: _wire_error})


def _json(body: dict[str, Any], status: int = 200) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)


async def _http_exception(request: Any, exc: Any) -> Any:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _json(error_body(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code, code),
                 exc.status_code)


async def _wire_error(request: Any, exc: WireError) -> Any:
    return _json(error_body(exc.message, exc.status, exc.code, exc.param), exc.status)


class _Api:
    def __init__(self, served: Served, config: ServeConfig, scheduler: Scheduler) -> None:
        self.served = served
        self.config = config
        self.scheduler = scheduler
        self.model_ids = (served.model_id, *served.aliases)
        self.keepalive_s = KEEPALIVE_S

    def guard(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Check the key, map refusals to JSON errors, and never let a traceback out."""
        async def guarded(request: Any) -> Any:
            try:
                self._authorize(request)
                return await handler(request)
            except WireError as exc:
                return await _wire_error(request, exc)
            except QueueFull:
                return _json(error_body(f"{self.scheduler.waiting} requests are already waiting; try again later",
                                        503, "queue_full"), 503)
            except Exception as exc:  # noqa: BLE001 - a bug must not become a traceback for the client
                sys.stderr.write(f"kimi serve: error: {type(exc).__name__}: {exc}\n")
                return _json(error_body("internal server error", 500, "internal_error"), 500)
        return guarded

    def _authorize(self, request: Any) -> None:
        if self.served.tokens is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not any(hmac.compare_digest(given.encode(), t.encode()) for t in self.served.tokens):
            raise WireError("invalid or missing API key (send `Authorization: Bearer KEY`)", 401, "invalid_api_key")

    async def health(self, request: Any) -> Any:
        stats = self.scheduler.stats
        return _json({"status": "ok", "model": self.served.model_id, "instance": self.served.instance,
                      "busy": self.scheduler.busy, "waiting": self.scheduler.waiting,
                      "completed": stats.completed, "cancelled": stats.cancelled, "failed": stats.failed})

    async def models(self, request: Any) -> Any:
        s = self.served
        entry = {"id": s.model_id, "object": "model", "created": 0, "owned_by": "kimi",
                 "context_length": s.context_length, "max_model_len": s.context_length,
                 "input_modalities": ["text", "image"], "capabilities": {"vision": True, "reasoning": True}}
        return _json({"object": "list", "data": [entry]})

    async def chat(self, request: Any) -> Any:
        body = await _read_body(request, self.config.max_body_bytes)
        # Off the event loop: decoding a request's images must not stall the other streams.
        call = await asyncio.to_thread(parse_chat, body, self.config, self.model_ids, self.served.defaults)
        if self.served.count_prompt is not None:
            size = await asyncio.to_thread(self.served.count_prompt, call.request.messages)
            call = fit_context(call, size, self.served.context_length)
        job = self.scheduler.submit(call.request)
        if call.stream:
            from starlette.responses import StreamingResponse

            return StreamingResponse(self._sse(call, job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self._whole(request, call, job)

    async def _sse(self, call: ChatCall, job: Job) -> AsyncIterator[str]:
        reply = Reply(call.model)
        yield _data(reply.chunk({"role": "assistant", "content": ""}))
        async for item in self._turn(call, job):
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                yield _data(reply.chunk(item))
            elif isinstance(item, ErrorEvent):
                yield _data(error_body(item.message, 500, "generation_failed"))
            else:
                finished, stopped = item
                yield _data(reply.chunk({}, finish_reason(finished, stopped)))
                if call.include_usage:
                    yield _data(reply.usage_chunk(finished.usage))
        yield "data: [DONE]\n\n"

    async def _turn(self, call: ChatCall, job: Job) -> AsyncIterator[Any]:
        """Deltas as dicts, keep-alive comments as str, then (Finished, stopped) or an ErrorEvent."""
        stops = StopMatcher(call.stop)
        events = self.scheduler.events(job, self.keepalive_s)
        try:
            async for event in events:
                if event is KEEPALIVE:
                    yield ": keep-alive\n\n"
                elif isinstance(event, ThinkingDelta) and event.text:
                    yield thinking_delta(event.text)
                elif isinstance(event, AnswerDelta):
                    text = stops.feed(event.text)
                    if stops.matched:
                        job.cancel()
                    if text:
                        yield {"content": text}
                elif isinstance(event, Finished):
                    if tail := stops.flush():
                        yield {"content": tail}
                    yield (event, stops.matched)
                elif isinstance(event, ErrorEvent):
                    yield event
        finally:
            await events.aclose()

    async def _whole(self, request: Any, call: ChatCall, job: Job) -> Any:
        """A non-streamed reply; a client that disconnects meanwhile cancels it."""
        watcher = asyncio.ensure_future(_watch_disconnect(request, job))
        thinking: list[str] = []
        answer: list[str] = []
        try:
            async for item in self._turn(call, job):
                if isinstance(item, dict):
                    thinking.append(item.get("reasoning_content", ""))
                    answer.append(item.get("content", ""))
                elif isinstance(item, ErrorEvent):
                    return _json(error_body(item.message, 500, "generation_failed"), 500)
                elif isinstance(item, tuple):
                    finished, stopped = item
                    return _json(Reply(call.model).response("".join(thinking), "".join(answer), finished, stopped))
        finally:
            watcher.cancel()
        return _json(error_body("generation stopped without a result", 500, "generation_failed"), 500)


async def _watch_disconnect(request: Any, job: Job) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)
    job.cancel()


def _data(obj: dict[str, Any]) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


async def _read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = WireError(f"request body is larger than this server's limit of {limit // (1024 * 1024)} MiB "
                        f"({limit} bytes)", 413, "request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
