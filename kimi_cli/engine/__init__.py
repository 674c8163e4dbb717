"""Engines turn a `Request` into a stream of events. They never print.

Front ends get an engine from `kimi_cli.app.engines.make_engine` (chosen by the `backend` setting)
and use only what `Engine` declares here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from kimi_cli.conversation import Request
from kimi_cli.events.types import Event


@dataclass(frozen=True)
class Capabilities:
    """What an engine does itself, so front ends know what to expect of it."""

    #: Keeps the conversation's context between turns (a follow-up reuses the cached prefix).
    keeps_cache: bool = False
    #: Counts prompt and generated tokens itself (usage numbers are exact, not estimates).
    counts_tokens: bool = True
    #: Needs images decoded and resized here (a remote server might take the files as they are).
    local_images: bool = True


class Engine(Protocol):
    """Anything that streams events for a request: the local transformers engine, or a scripted fake."""

    @property
    def capabilities(self) -> Capabilities:
        """What this engine does itself."""
        ...

    def stream(self, request: Request) -> Iterator[Event]:
        """Yield Thinking/Answer deltas and notices, then exactly one `Finished` (or `ErrorEvent`)."""
        ...

    def cancel(self) -> None:
        """Ask a running `stream` to stop soon; it then yields `Finished(stop_reason="cancelled")`."""
        ...

    def reset(self) -> None:
        """Forget any cached conversation context (the next turn starts from scratch)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (model memory, threads, connections); it is not used again."""
        ...
