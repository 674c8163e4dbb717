"""Engines turn a `Request` into a stream of events. They never print."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from kimi_cli.conversation import Request
from kimi_cli.events.types import Event


class Engine(Protocol):
    """Anything that streams events for a request: the local transformers engine, or a scripted fake."""

    def stream(self, request: Request) -> Iterator[Event]:
        """Yield Thinking/Answer deltas and notices, then exactly one `Finished` (or `ErrorEvent`)."""
        ...

    def cancel(self) -> None:
        """Ask a running `stream` to stop soon; it then yields `Finished(stop_reason="cancelled")`."""
        ...
