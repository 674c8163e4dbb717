"""Plain renderer: the answer alone on stdout, as it streams; thinking and notes on stderr.

Used in pipes (`--format auto` with stdout not a terminal) and with `--format plain`. Stdout never
receives an escape code. Thinking goes to stderr, dimmed only when stderr is a terminal and
NO_COLOR is unset:

* `--thinking show`: always written to stderr.
* `--thinking collapse` (the default): written only when stderr is a terminal, where someone
  watches it; a log file or a capturing test gets no reasoning it did not ask for, so
  `kimi ask ... | head -c 10` leaves stderr empty.
* `--thinking hide`: never.

Info notices (progress) reach stderr only when it is a terminal; warnings, cut-off notes and
errors always do. A broken pipe raises `OutputClosed` (see `kimi_cli.render.base.write`).
"""

from __future__ import annotations

from typing import TextIO

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Event, Finished, Notice, ThinkingDelta
from kimi_cli.render.base import OutputClosed, RenderMeta, ThinkingMode, error_lines, notice_line, write
from kimi_cli.render.env import Environment

_DIM, _UNDIM = "\x1b[2m", "\x1b[22m"


def cut_off_note(finished: Finished, answered: bool) -> str | None:
    """The one line that explains a reply that did not end on its own (None if it did)."""
    if finished.stop_reason == "cancelled":
        return "cut off by Ctrl-C"
    if finished.stop_reason == "max_tokens":
        if answered:
            return "cut off at the token limit (raise --max-new-tokens)"
        return "cut off at the token limit while thinking, before any answer (raise --max-new-tokens)"
    return None


class PlainRenderer:
    """Answer to stdout, thinking/notices/errors to stderr, flushed as they arrive."""

    def __init__(self, env: Environment, thinking: ThinkingMode = "collapse") -> None:
        self._env = env
        self._show_thinking = thinking == "show" or (thinking == "collapse" and env.stderr_isatty)
        self._styled = env.stderr_styled
        self._stdout_open = False  # answer text written, its last line not ended
        self._stderr_open = False  # thinking text written, its last line not ended
        self._answered = False
        self._closed = False

    def start(self, meta: RenderMeta) -> None:
        """Nothing to show before the first token."""

    def handle(self, event: Event) -> None:
        """Write one event where it belongs."""
        if isinstance(event, ThinkingDelta):
            self._thinking(event.text)
        elif isinstance(event, AnswerDelta):
            self._answer(event.text)
        elif isinstance(event, Notice):
            if event.level == "warning" or self._env.stderr_isatty:
                self._note(notice_line(event))
        elif isinstance(event, Finished):
            self._end_lines()
            note = cut_off_note(event, self._answered)
            if note:
                self._note(f"kimi: {note}")
        elif isinstance(event, ErrorEvent):
            self._end_lines()
            for line in error_lines(event):
                self._err(line + "\n")

    def close(self) -> None:
        """End any open line; after a closed pipe, write nothing."""
        if not self._closed:
            self._end_lines()
        self._closed = True

    def _thinking(self, text: str) -> None:
        if not (self._show_thinking and text):
            return
        self._err(f"{_DIM}{text}{_UNDIM}" if self._styled else text)
        self._stderr_open = True

    def _answer(self, text: str) -> None:
        if not text:
            return
        if self._stderr_open:
            # One blank line between the reasoning and the answer when both share a screen.
            self._err("\n\n")
            self._stderr_open = False
        self._out(text)
        self._stdout_open = self._answered = True

    def _note(self, line: str) -> None:
        """A whole line on stderr, never glued to thinking text."""
        if self._stderr_open:
            self._err("\n")
            self._stderr_open = False
        self._err(f"{_DIM}{line}{_UNDIM}\n" if self._styled else line + "\n")

    def _end_lines(self) -> None:
        if self._stdout_open:
            self._out("\n")
            self._stdout_open = False
        if self._stderr_open:
            self._err("\n")
            self._stderr_open = False

    def _out(self, text: str) -> None:
        self._guarded(self._env.stdout, text)

    def _err(self, text: str) -> None:
        self._guarded(self._env.stderr, text)

    def _guarded(self, stream: TextIO, text: str) -> None:
        if self._closed:
            return
        try:
            write(stream, text)
        except OutputClosed:
            self._closed = True
            raise
