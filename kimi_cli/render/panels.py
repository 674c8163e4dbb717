"""Rich renderer for terminals: a live thinking tail, then the answer as Markdown in a panel.

Screen layout, top to bottom:

    ▸ Thought for 12.3 s · 845 tokens          (--thinking show: the whole thinking panel)
    ╭─ Answer ───────────────────────────╮     finished Markdown blocks, printed once
    │ ...                                │
    ╰────────────────────────────────────╯     the live area: the block being written
    0.42 s to first token · 31.5 tokens/s ...  footer

Only one `Live` area exists and it is bounded: it holds the thinking tail (at most
`THINKING_TAIL` lines) or the tail of the Markdown block being written, never more than the
terminal's height minus one line. Finished blocks (split at blank lines outside code fences) are
printed above it, so an answer taller than the terminal scrolls normally with no line drawn twice.
The area is transient: whatever it showed is erased when it stops, and everything that stays on
screen is printed exactly once. Refreshes are throttled to `REFRESH_HZ`.

Everything goes to stdout's console: this renderer runs only when stdout is a terminal, where the
screen is one surface, and notices or errors written to stderr meanwhile would tear the live area.
When stderr is not a terminal (`2>log`), warnings and errors go there as plain lines instead (info
notices, which are progress, are dropped there as in the plain renderer).
Without cursor movement (NO_COLOR, TERM=dumb) there is no live area: blocks print as they finish.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Event, Finished, Notice, ThinkingDelta
from kimi_cli.render.base import OutputClosed, RenderMeta, ThinkingMode, error_lines, notice_line, write
from kimi_cli.render.env import mute_stream
from kimi_cli.render.plain import cut_off_note
from kimi_cli.render.tty import EchoOff

THINKING_TAIL = 8
REFRESH_HZ = 12.0
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_BORDER = Style(dim=True)


class MarkdownBlocks:
    """Cuts streaming Markdown into finished blocks at blank lines outside code fences.

    A block counts as finished only when the next block starts, because an indented line after a
    blank line continues the block (a list item's second paragraph) rather than starting one.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lines: list[str] = []
        self._partial = ""
        self._fence: str | None = None
        self._gap = False  # a blank line followed the current block

    def feed(self, text: str) -> list[str]:
        """Add text; return the blocks it finished."""
        *lines, self._partial = (self._partial + text).split("\n")
        done: list[str] = []
        for line in lines:
            self._line(line, done)
        return done

    @property
    def current(self) -> str:
        """The unfinished block as it stands, including the line being written."""
        lines = list(self._lines)
        if self._partial:
            lines += ["", self._partial] if self._gap else [self._partial]
        return "\n".join(lines)

    def flush(self) -> str:
        """End of text: the last block (possibly empty)."""
        block = self.current
        self._reset()
        return block

    def _line(self, line: str, done: list[str]) -> None:
        if self._fence is None and not line.strip():
            self._gap = bool(self._lines)
            return
        if self._gap:
            self._gap = False
            if line[:1] in (" ", "\t"):
                self._lines.append("")
            else:
                done.append("\n".join(self._lines))
                self._lines = []
        self._lines.append(line)
        self._track_fence(line)

    def _track_fence(self, line: str) -> None:
        match = _FENCE_RE.match(line)
        if match is None:
            return
        fence, rest = match.groups()
        if self._fence is None:
            self._fence = fence
        elif fence[0] == self._fence[0] and len(fence) >= len(self._fence) and not rest.strip():
            self._fence = None


def _blank(line: list[Segment]) -> bool:
    return all(not seg.text.strip() and not (seg.style and seg.style.bgcolor) for seg in line)


def markdown_lines(console: Console, block: str, width: int) -> list[list[Segment]]:
    """A Markdown block rendered to lines of exactly `width` cells, blank edges trimmed."""
    options = console.options.update(width=width, height=None)
    lines = console.render_lines(Markdown(block), options, pad=True)
    while lines and _blank(lines[0]):
        lines.pop(0)
    while lines and _blank(lines[-1]):
        lines.pop()
    return [Segment.adjust_line_length(line, width) for line in lines]


class PanelSlice:
    """Part of a panel drawn in pieces: an optional top border, body lines, an optional bottom."""

    def __init__(self, body: list[list[Segment]], title: str | None = None, bottom: bool = False) -> None:
        self.body, self.title, self.bottom = body, title, bottom

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if self.title is not None:
            label = f"─ {self.title} "
            yield Segment("╭" + label + "─" * max(0, width - 2 - len(label)) + "╮", _BORDER)
            yield Segment.line()
        for line in self.body:
            yield Segment("│ ", _BORDER)
            yield from line
            yield Segment(" │", _BORDER)
            yield Segment.line()
        if self.bottom:
            yield Segment("╰" + "─" * (width - 2) + "╯", _BORDER)
            yield Segment.line()


class _LiveView:
    """What the live area shows, computed only when Rich actually redraws it."""

    def __init__(self, build: Callable[[], RenderableType]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build()


class _Console(Console):
    """A console whose broken pipe becomes `OutputClosed` instead of Rich's `SystemExit(1)`."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        mute_stream(self.file)
        raise OutputClosed


def make_console(file: TextIO, *, terminal: bool, color: bool, width: int | None, height: int | None) -> Console:
    """The console the renderer draws on (no markup, emoji or number highlighting in model text)."""
    return _Console(
        file=file, force_terminal=terminal, color_system="auto" if color else None, no_color=not color,
        width=width, height=height, markup=False, emoji=False, highlight=False,
    )


def _tokens(count: int, kind: str = "") -> str:
    return f"{count:,} {kind}token{'' if count == 1 else 's'}"


def footer_text(event: Finished) -> str:
    """`0.42 s to first token · 31.5 tokens/s · 845 tokens · 1,024 image tokens` (known parts only)."""
    parts = []
    if event.timings.first_token_s is not None:
        parts.append(f"{event.timings.first_token_s:.2f} s to first token")
    if event.tokens_per_s is not None:
        parts.append(f"{event.tokens_per_s:.1f} tokens/s")
    if event.usage.generated_tokens:
        parts.append(_tokens(event.usage.generated_tokens))
    if event.usage.image_tokens:
        parts.append(_tokens(event.usage.image_tokens, "image "))
    return " · ".join(parts)


class PanelsRenderer:
    """The terminal renderer: see the module docstring for the layout."""

    def __init__(
        self,
        console: Console,
        thinking: ThinkingMode = "collapse",
        *,
        clock: Callable[[], float],
        live: bool = True,
        err: TextIO | None = None,
    ) -> None:
        self.console = console
        self._mode = thinking
        self._clock = clock
        self._use_live = live and console.is_terminal
        self._err = err
        self._live: Live | None = None
        self._echo: EchoOff | None = None
        self._phase = "waiting"  # -> thinking -> answer -> done
        self._thinking: list[str] = []
        self._tail = ""  # the end of the thinking, enough for the live panel
        self._thinking_tokens = 0
        self._budget_cut = False
        self._think_start: float | None = None
        self._thought_s: float | None = None
        self._blocks = MarkdownBlocks()
        self._printed_blocks = 0
        self._last_refresh = float("-inf")

    def start(self, meta: RenderMeta) -> None:
        """Nothing shows until the first token: loading progress belongs to the caller."""

    def handle(self, event: Event) -> None:
        """Update the screen for one event."""
        if isinstance(event, ThinkingDelta):
            self._on_thinking(event)
        elif isinstance(event, AnswerDelta):
            self._on_answer(event.text)
        elif isinstance(event, Notice):
            line = notice_line(event)
            if event.level == "warning" or self._err is None:
                self._say(Text(line, style="yellow" if event.level == "warning" else "dim"), line)
        elif isinstance(event, Finished):
            self._on_finished(event)
        elif isinstance(event, ErrorEvent):
            self._wrap_up()
            lines = error_lines(event)
            self._say(Text(lines[0], style="bold red"), lines[0])
            for line in lines[1:]:
                self._say(Text(line, style="dim"), line)

    def close(self) -> None:
        """Stop the live area; keep a partial answer on screen if no final event came."""
        self._wrap_up()

    # -- events ------------------------------------------------------------------------------

    def _on_thinking(self, event: ThinkingDelta) -> None:
        if self._think_start is None:
            self._think_start = self._clock()
        self._thinking.append(event.text)
        self._tail = (self._tail + event.text)[-4096:]
        self._thinking_tokens += event.tokens
        self._budget_cut = self._budget_cut or event.truncated
        if self._phase == "waiting":
            self._phase = "thinking"
            self._start_live()
        self._refresh()

    def _on_answer(self, text: str) -> None:
        if not text or self._phase == "done":
            return
        if self._phase != "answer":
            self._begin_answer()
        for block in self._blocks.feed(text):
            self._print_block(block)
        self._refresh()

    def _on_finished(self, event: Finished) -> None:
        answered = self._phase == "answer"
        self._wrap_up()
        note = cut_off_note(event, answered)
        if note:
            self.console.print(Text(f"✂ {note}", style="yellow"))
        footer = footer_text(event)
        if footer:
            self.console.print(Text(footer, style="dim"))

    def _begin_answer(self) -> None:
        self._end_thinking()
        self._phase = "answer"
        self._start_live()
        self.console.print(PanelSlice([], title="Answer"))

    def _end_thinking(self) -> None:
        """Replace the live thinking tail by the collapsed line (or the whole panel with `show`)."""
        if self._think_start is not None:
            self._thought_s = self._clock() - self._think_start
        text = "".join(self._thinking).strip()
        if not text or self._mode == "hide":
            return
        label = f"Thought for {self._thought_s or 0.0:.1f} s"
        if self._thinking_tokens:
            label += f" · {_tokens(self._thinking_tokens)}"
        if self._budget_cut:
            label += " (budget)"
        if self._mode == "show":
            title = Text(label, style="dim")
            self.console.print(Panel(Text(text, style="dim"), title=title, title_align="left", border_style="dim"))
        else:
            self.console.print(Text(f"▸ {label}", style="dim"))

    def _print_block(self, block: str) -> None:
        lines = markdown_lines(self.console, block, self.console.width - 4)
        if self._printed_blocks:
            lines.insert(0, [Segment(" " * (self.console.width - 4))])
        self.console.print(PanelSlice(lines))
        self._printed_blocks += 1

    def _wrap_up(self) -> None:
        """Stop the live area and print what it held for good; runs once."""
        if self._phase == "done":
            return
        phase, self._phase = self._phase, "done"
        try:
            self._stop_live()
        finally:
            if phase == "thinking":
                self._end_thinking()
            elif phase == "answer":
                block = self._blocks.flush()
                if block.strip():
                    self._print_block(block)
                self.console.print(PanelSlice([], bottom=True))

    def _say(self, renderable: Text, plain: str) -> None:
        """A notice or error line: on the console, or on stderr when that is not a terminal."""
        if self._err is not None:
            write(self._err, plain + "\n")
        else:
            self.console.print(renderable)

    # -- the live area -----------------------------------------------------------------------

    def _start_live(self) -> None:
        if self._live is not None or not self._use_live:
            return
        # Only a real stdout is worth redirecting: stray prints then land above the live area.
        real = self.console.file is sys.stdout
        self._live = Live(
            _LiveView(self._view), console=self.console, auto_refresh=False, transient=True,
            redirect_stdout=real, redirect_stderr=real, vertical_overflow="crop",
        )
        self._echo = EchoOff(self.console.file)  # an echoed ^C would shift the area (see render.tty)
        self._live.start()

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        try:
            if live is not None:
                live.stop()
        finally:
            if self._echo is not None:
                self._echo.restore()
                self._echo = None

    def _refresh(self) -> None:
        if self._live is None:
            return
        now = self._clock()
        if now - self._last_refresh >= 1.0 / REFRESH_HZ:
            self._last_refresh = now
            self._live.refresh()

    def _view(self) -> RenderableType:
        """The live area: never taller than the terminal minus one line."""
        width, room = self.console.width, max(3, self.console.height - 1)
        if self._phase == "answer":
            current = self._blocks.current
            body = markdown_lines(self.console, current, width - 4) if current.strip() else []
            if self._printed_blocks and body:
                body.insert(0, [Segment(" " * (width - 4))])
            return PanelSlice(body[-(room - 1):], bottom=True)
        elapsed = self._clock() - (self._think_start or self._clock())
        status = Text(f"Thinking… {elapsed:.1f} s", style="dim")
        if self._phase != "thinking" or self._mode == "hide":
            return status if self._phase == "thinking" else Group()
        rows = max(1, min(THINKING_TAIL, room - 2))
        lines = Text(self._tail.strip(), style="dim").wrap(self.console, width - 4)
        tail = Text("\n").join(lines[-rows:])
        return Panel(tail, title=status, title_align="left", border_style="dim")
