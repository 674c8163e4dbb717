"""Run one turn: feed the engine's events to a renderer, with Ctrl-C cancelling cleanly.

Shared by `kimi ask` and the REPL. On Ctrl-C the engine is told to stop and the same event stream
is drained, so the renderer still receives the closing `Finished(stop_reason="cancelled")` and the
partial answer stays on screen (and in JSON output).
"""

from __future__ import annotations

from typing import Any

from kimi_cli.errors import EXIT_INTERRUPTED, EXIT_OK
from kimi_cli.events.types import ErrorEvent, Event, Finished


def run_turn(engine: Any, request: Any, renderer: Any) -> Event | None:
    """Stream `request` through `renderer`; returns the last event (`Finished` or `ErrorEvent`)."""
    events = engine.stream(request)
    last: Event | None = None
    try:
        for event in events:
            renderer.handle(event)
            last = event
    except KeyboardInterrupt:
        engine.cancel()
        for event in events:
            renderer.handle(event)
            last = event
    return last


def exit_code_for(last: Event | None) -> int:
    """The process exit code a finished turn implies."""
    if isinstance(last, ErrorEvent):
        return last.exit_code
    if isinstance(last, Finished) and last.stop_reason == "cancelled":
        return EXIT_INTERRUPTED
    return EXIT_OK
