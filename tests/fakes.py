"""Shared test helpers: a scripted engine, a fake clock, a tiny terminal emulator, golden files.

* `ScriptedEngine(events, delay=0)` keeps the `Engine` protocol: `stream()` yields the scripted
  events; a `CTRL_C` entry raises KeyboardInterrupt in the consumer (like Ctrl-C while it waits),
  and after `cancel()` the stream ends with `Finished(stop_reason="cancelled")` like the real one.
* `Screen` replays what Rich wrote (text plus cursor-up / erase-line / carriage-return codes) onto a
  terminal of fixed height with scrollback, and fails if anything tries to move the cursor above
  the top of the screen, which is exactly when a live area would leave duplicated lines behind.
  Like a real terminal it wraps a character written past the last column onto the next line
  (so an echoed `^C` after a full-width line shows where it would).
* `assert_golden(name, text)` compares with tests/golden/NAME; `KIMI_UPDATE_GOLDEN=1` rewrites.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kimi_cli.events.types import AnswerDelta, Event, Finished, ThinkingDelta, Timings, Usage
from kimi_cli.render.env import Environment

GOLDEN_DIR = Path(__file__).parent / "golden"


class _CtrlC:
    def __repr__(self) -> str:
        return "CTRL_C"


#: Put in a script where the user presses Ctrl-C.
CTRL_C = _CtrlC()


class WaitForCancel:
    """A script step: call `reached()` (tell a test to press Ctrl-C), then wait for `cancel()`.

    This is how a real engine behaves when the user presses Ctrl-C mid-generation: the signal
    handler calls `cancel()` and the stream ends with `Finished("cancelled")`.
    """

    def __init__(self, reached: Any = None, timeout: float = 30.0) -> None:
        self.reached = reached or (lambda: None)
        self.timeout = timeout

    def __repr__(self) -> str:
        return "WaitForCancel()"


Step = Event | _CtrlC | WaitForCancel


class FakeClock:
    """A clock that moves only when told to (or by `step` on every event of `ticking`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def ticking(self, events: Iterator[Event], step: float) -> Iterator[Event]:
        """Pass `events` through, advancing the clock by `step` before each one."""
        return _Ticking(self, events, step)


class _Ticking:
    """An iterator object rather than a generator, so that a KeyboardInterrupt passes through."""

    def __init__(self, clock: FakeClock, events: Iterator[Event], step: float) -> None:
        self.clock, self.events, self.step = clock, events, step

    def __iter__(self) -> _Ticking:
        return self

    def __next__(self) -> Event:
        self.clock.advance(self.step)
        return next(self.events)


class _Script:
    """An iterator object (not a generator), so a KeyboardInterrupt leaves it usable."""

    def __init__(self, engine: ScriptedEngine) -> None:
        self.engine = engine
        self.steps = list(engine.events)
        self.done = False

    def __iter__(self) -> _Script:
        return self

    def __next__(self) -> Event:
        if self.done:
            raise StopIteration
        if self.engine.cancelled:
            self.done = True
            return Finished(stop_reason="cancelled", usage=Usage(generated_tokens=self.engine.yielded))
        if not self.steps:
            raise StopIteration
        if self.engine.delay:
            time.sleep(self.engine.delay)
        step = self.steps.pop(0)
        if isinstance(step, _CtrlC):
            raise KeyboardInterrupt
        if isinstance(step, WaitForCancel):
            step.reached()
            deadline = time.monotonic() + step.timeout
            while not self.engine.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
            return next(self)
        self.engine.yielded += 1
        return step


class ScriptedEngine:
    """An `Engine` that replays a list of events (see the module docstring)."""

    def __init__(self, events: Sequence[Step], delay: float = 0.0) -> None:
        self.events = list(events)
        self.delay = delay
        self.cancelled = False
        self.yielded = 0
        self.requests: list[Any] = []

    def stream(self, request: Any) -> Iterator[Event]:
        self.requests.append(request)
        self.cancelled = False
        self.yielded = 0
        return _Script(self)

    def cancel(self) -> None:
        self.cancelled = True

    def reset(self) -> None:
        self.resets = getattr(self, "resets", 0) + 1

    def close(self) -> None:
        self.closed = True

    @property
    def capabilities(self) -> Any:
        from kimi_cli.engine import Capabilities

        return Capabilities(keeps_cache=False, counts_tokens=True, local_images=True)


def reply_events(
    thinking: str,
    answer: str,
    *,
    chunk: int = 7,
    stop_reason: str = "end_turn",
    usage: Usage | None = None,
    timings: Timings | None = None,
    tokens_per_s: float | None = None,
    finish: bool = True,
) -> list[Event]:
    """Deltas of `chunk` characters (one token each), then `Finished` unless `finish` is False."""
    events: list[Event] = [ThinkingDelta(thinking[i : i + chunk], 1) for i in range(0, len(thinking), chunk)]
    events += [AnswerDelta(answer[i : i + chunk]) for i in range(0, len(answer), chunk)]
    if finish:
        events.append(Finished(stop_reason, usage or Usage(), timings or Timings(), tokens_per_s))  # type: ignore[arg-type]
    return events


def make_env(*, tty: bool = False, stderr_tty: bool | None = None, no_color: bool = True, clock: Any = None,
             width: int = 80, height: int = 24) -> Environment:
    """An environment over string buffers (read them back from `env.stdout.getvalue()`)."""
    return Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=tty,
        stderr_isatty=tty if stderr_tty is None else stderr_tty, no_color=no_color,
        width=width, height=height, clock=clock or FakeClock(),
    )


_CSI = re.compile(r"\x1b\[(\??)([\d;]*)([A-Za-z])")


class ScreenError(AssertionError):
    """The output did something a fixed-size terminal cannot show faithfully."""


class Screen:
    """Replays terminal output: text, \\r, \\n, cursor up, erase line; keeps the scrollback."""

    def __init__(self, width: int = 80, height: int = 24) -> None:
        self.width, self.height = width, height
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0

    def feed(self, data: str) -> Screen:
        pos = 0
        for match in _CSI.finditer(data):
            self._text(data[pos : match.start()])
            self._csi(*match.groups())
            pos = match.end()
        self._text(data[pos:])
        return self

    def text(self) -> str:
        """Scrollback plus screen, right-trimmed, trailing blank rows dropped."""
        return "\n".join("".join(r).rstrip() for r in self.rows).rstrip("\n") + "\n"

    @property
    def top(self) -> int:
        return max(0, len(self.rows) - self.height)

    def _text(self, text: str) -> None:
        for char in text:
            if char == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.rows):
                    self.rows.append([])
            elif char == "\r":
                self.col = 0
            else:
                if self.col >= self.width:  # a terminal wraps only when the next character comes
                    self._text("\n")
                line = self.rows[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = char
                self.col += 1

    def _csi(self, private: str, arg: str, op: str) -> None:
        if private or op == "m":
            return  # cursor visibility, colours: nothing to place
        if op == "A":
            target = self.row - int(arg or 1)
            if target < self.top:
                raise ScreenError(f"cursor moved above the screen (row {target} < top {self.top})")
            self.row = target
        elif op == "K" and arg == "2":
            self.rows[self.row] = []
        else:
            raise ScreenError(f"unexpected control sequence {op!r}")


def assert_golden(name: str, text: str) -> None:
    """Compare `text` with tests/golden/`name`; rewrite the file when KIMI_UPDATE_GOLDEN=1."""
    path = GOLDEN_DIR / name
    if os.environ.get("KIMI_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run with KIMI_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; inspect, then KIMI_UPDATE_GOLDEN=1"
