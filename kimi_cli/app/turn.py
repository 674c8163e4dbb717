"""One turn: a `Request` from settings and messages, streamed through a renderer (or just the events)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.events.types import Event, Notice


def generation_settings(settings: Any) -> GenerationSettings:
    """The sampling and length part of the settings."""
    from kimi_cli.app.schema import schema_text

    return GenerationSettings(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, seed=settings.seed,
                              think_budget=getattr(settings, "think_budget", None),
                              json_schema=schema_text(settings))


def make_request(messages: Sequence[Message], settings: Any, system: str | None = None) -> Request:
    """What the engine is asked: continue `messages` with an assistant turn."""
    return Request(messages=tuple(messages), settings=generation_settings(settings), system_prompt=system)


def stream_events(engine: Any, request: Request, notes: Sequence[str] = ()) -> Iterator[Event]:
    """The turn's events: the notes as warnings first, then the engine's stream (closed at the end)."""
    stream = engine.stream(request)
    try:
        yield from itertools.chain([Notice(n, "warning") for n in notes], stream)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stops and joins the generation thread if the consumer stopped early


def render_turn(engine: Any, request: Request, renderer: Any, meta: Any, events_tap: Any = None,
                notes: Sequence[str] = ()) -> Any:
    """Stream one turn through `renderer` (Ctrl-C cancels); returns `render_stream`'s outcome.

    No generator of our own sits between the engine and the renderer: a Ctrl-C that lands while
    events are being passed on must leave the stream readable, so `render_stream` can still read
    the engine's `Finished("cancelled")`. `events_tap(notes, stream)` may wrap the stream (the REPL
    keeps the answer that way).
    """
    from kimi_cli.render.base import render_stream

    stream = engine.stream(request)
    events = events_tap(notes, iter(stream)) if events_tap else itertools.chain(
        [Notice(n, "warning") for n in notes], stream)
    try:
        return render_stream(renderer, meta, events, engine.cancel)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stops and joins the generation thread if the renderer stopped early
