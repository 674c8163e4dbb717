"""The one `Renderer` interface, and `render_stream`, the loop that feeds it and handles Ctrl-C.

A renderer shows one turn. The caller makes it with `kimi_cli.render.make_renderer`, then hands it
to `render_stream` together with the engine's event stream and the engine's `cancel`:

    outcome = render_stream(renderer, meta, engine.stream(request), engine.cancel)
    raise SystemExit(outcome.exit_code)   # the renderer has already shown any error

Contract of every renderer:
* `start(meta)` once, before any event; `handle(event)` for each event in order; the stream's last
  event is a `Finished` (stop reason end_turn, max_tokens or cancelled) or an `ErrorEvent`, and the
  renderer shows it (cut-off mark, footer, the one error line).
* `close()` always runs (`finally`), is idempotent, stops any live display and leaves the terminal
  clean; if no final event came (a crash) it still shows what it had.
* Writing to a stdout whose reader went away (`kimi ... | head`) raises `OutputClosed`; the
  renderer has already pointed the stream at /dev/null, so nothing else fails later.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol, TextIO

from kimi_cli.errors import EXIT_GENERATION, EXIT_INTERRUPTED, EXIT_OK
from kimi_cli.events.types import ErrorEvent, Event, Finished, Notice
from kimi_cli.render.env import mute_stream
from kimi_cli.textsafe import printable

#: `--thinking`: collapse to one line once the answer starts, show it all, or show nothing.
ThinkingMode = Literal["collapse", "show", "hide"]


@dataclass(frozen=True)
class RenderMeta:
    """What the turn is about; `--format json` echoes it."""

    model: str = ""
    files: tuple[str, ...] = ()
    prompt: str = ""
    #: Where the turn ran: "local", or "server" (an OpenAI-compatible server: `kimi serve`, vLLM, ...).
    backend: str = "local"


class OutputClosed(Exception):
    """The reader of our output went away (broken pipe). The CLI exits quietly."""


def write(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that went away becomes `OutputClosed` (after muting the stream)."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        mute_stream(stream)
        raise OutputClosed from None


def error_lines(event: ErrorEvent) -> list[str]:
    """The one error line (plus a hint line) that every renderer prints, as the CLI would."""
    lines = [f"kimi: error: {printable(event.message)}"]
    if event.hint:
        lines.append(f"hint: {printable(event.hint)}")
    return lines


def notice_line(event: Notice) -> str:
    """A notice as one line for stderr."""
    text = printable(event.text)  # notices name user files; never the model's text
    return f"kimi: warning: {text}" if event.level == "warning" else f"kimi: {text}"


class Renderer(Protocol):
    """Turns the events of one turn into output."""

    def start(self, meta: RenderMeta) -> None:
        """Called once before the first event."""
        ...

    def handle(self, event: Event) -> None:
        """Show one event. Must be quick: it runs between tokens."""
        ...

    def close(self) -> None:
        """Stop live displays and flush; always called, safe to call twice."""
        ...


@dataclass(frozen=True)
class Outcome:
    """How a rendered turn ended; the CLI turns it into an exit code and prints nothing more."""

    finished: Finished | None = None
    error: ErrorEvent | None = None
    interrupted: bool = False
    output_closed: bool = False

    @property
    def exit_code(self) -> int:
        """0, the error's code, or 130 after Ctrl-C. A closed pipe is a normal end (`| head`)."""
        if self.output_closed:
            return EXIT_OK
        if self.error is not None:
            return self.error.exit_code
        if self.interrupted or (self.finished is not None and self.finished.stop_reason == "cancelled"):
            return EXIT_INTERRUPTED
        return EXIT_OK


class _Pump:
    """Moves events to the renderer; the first Ctrl-C cancels the engine, a second stops waiting."""

    def __init__(self, renderer: Renderer, cancel: Callable[[], None]) -> None:
        self.renderer = renderer
        self.cancel = cancel
        self.interrupted = False
        self.stopped = False  # a second Ctrl-C: stop waiting for the engine
        self.last: Finished | ErrorEvent | None = None

    def run(self, events: Iterator[Event]) -> None:
        while not self.stopped:
            try:
                event = next(events)
            except StopIteration:
                break
            except KeyboardInterrupt:
                # A generator interrupted inside its own frame is finished (the next call says
                # StopIteration); an iterator object may go on to yield Finished("cancelled").
                self.interrupt()
                continue
            if self.last is None:
                self.deliver(event)
        if self.last is None:
            self.deliver(_missing_end(self.interrupted))

    def deliver(self, event: Event) -> None:
        if isinstance(event, (Finished, ErrorEvent)):
            self.last = event
        try:
            self.renderer.handle(event)
        except KeyboardInterrupt:
            self.interrupt()

    def interrupt(self) -> None:
        """Record a Ctrl-C: the first cancels the engine, the second stops waiting for it."""
        if self.interrupted:
            self.stopped = True
            return
        self.interrupted = True
        self.cancel()


@contextmanager
def _sigint_cancels(pump: _Pump) -> Iterator[None]:
    """While rendering, the first Ctrl-C only cancels; a second raises KeyboardInterrupt.

    A KeyboardInterrupt can strike anywhere, also halfway through drawing the live area; a handler
    that merely calls `cancel()` lets the engine end the stream with `Finished("cancelled")` and
    the renderer draw it calmly. Signal handlers can be set only from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        if pump.interrupted:
            raise KeyboardInterrupt
        pump.interrupt()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _missing_end(interrupted: bool) -> Finished | ErrorEvent:
    """The final event for a stream that stopped without one."""
    if interrupted:
        return Finished(stop_reason="cancelled")
    return ErrorEvent("generation stopped without a result", exit_code=EXIT_GENERATION)


def render_stream(
    renderer: Renderer,
    meta: RenderMeta,
    events: Iterable[Event],
    cancel: Callable[[], None],
    *,
    handle_sigint: bool = True,
) -> Outcome:
    """Render one turn from `events`; handle Ctrl-C and a closed stdout; always close the renderer.

    Ctrl-C calls `cancel()` and keeps reading until the engine's `Finished(stop_reason="cancelled")`,
    so the partial answer and its usage are shown; a second Ctrl-C (or a stream that died with the
    interrupt) ends at once with a synthesized `Finished("cancelled")`. With `handle_sigint` (and
    in the main thread) the first Ctrl-C is caught by a signal handler rather than as an exception.
    """
    pump = _Pump(renderer, cancel)
    closed = False
    guard = _sigint_cancels(pump) if handle_sigint else nullcontext()
    try:
        renderer.start(meta)
        with guard:
            pump.run(iter(events))
    except OutputClosed:
        closed = True
        cancel()
    finally:
        try:
            renderer.close()
        except OutputClosed:
            closed = True
    finished = pump.last if isinstance(pump.last, Finished) else None
    error = pump.last if isinstance(pump.last, ErrorEvent) else None
    return Outcome(finished, error, pump.interrupted, closed)
