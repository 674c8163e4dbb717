"""Output of `kimi ask --each`: `file: answer` blocks or one JSON object per file, and a progress bar.

stdout carries the results only: plain `FILE: answer` blocks separated by a blank line, or with
`--format jsonl` one object per file (the same record `--output` appends). Errors and warnings go
to stderr as `kimi: error: FILE: ...` lines. On a terminal's stderr a Rich progress bar with the
files done, the elapsed time and an ETA stays below them.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from kimi_cli.events.types import Notice
from kimi_cli.render.base import OutputClosed, write
from kimi_cli.render.env import Environment
from kimi_cli.textsafe import json_safe, printable


class BatchOutput:
    """The `Sink` of `kimi_cli.app.batch.run_batch` for the command line."""

    def __init__(self, env: Environment, jsonl: bool, progress: bool | None = None) -> None:
        self._env = env
        self._jsonl = jsonl
        self._show_progress = env.stderr_isatty if progress is None else progress
        self._progress: Any = None
        self._task: Any = None
        self._blocks = 0
        self._closed = False

    def start(self, total: int, skipped: int) -> None:
        """Say what is skipped; start the progress bar (terminal stderr only)."""
        if skipped:
            self._err(f"kimi: note: {skipped} file{'s' * (skipped != 1)} already done in --output (skipped)")
        if self._show_progress and total:
            self._progress = _make_progress(self._env)
            self._progress.start()
            self._task = self._progress.add_task("files", total=total)

    def begin(self, file: str) -> None:
        """Name the file being answered on the bar."""
        if self._progress is not None:
            self._progress.update(self._task, description=printable(file)[-40:])

    def notice(self, file: str, event: Notice) -> None:
        """Warnings always; info notes only on a terminal."""
        if event.level == "warning" or self._env.stderr_isatty:
            self._err(f"kimi: {'warning' if event.level == 'warning' else 'note'}: {printable(file)}: "
                      f"{printable(event.text)}")

    def record(self, record: dict[str, Any]) -> None:
        """Print one file's result; advance the bar."""
        error = record.get("error")
        if error is not None:
            name, message = printable(record["file"]), printable(error["message"])
            self._err(f"kimi: error: {message}" if name in message else f"kimi: error: {name}: {message}")
            if error.get("hint"):
                self._err(f"hint: {printable(error['hint'])}")
        if self._jsonl:
            self._out(json.dumps(json_safe(record), ensure_ascii=False) + "\n")
        elif error is None:
            gap = "\n" if self._blocks else ""
            self._out(f"{gap}{printable(record['file'])}: {record['answer']}\n")
            self._blocks += 1
        if self._progress is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        """Stop the bar (it leaves the terminal clean)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _out(self, text: str) -> None:
        if self._closed:
            return
        if self._progress is not None and self._env.stdout_isatty:
            # The same terminal as the bar: print above it, as Rich's own stdout redirect would.
            self._progress.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
            return
        try:
            write(self._env.stdout, text)
        except OutputClosed:
            self._closed = True
            raise

    def _err(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        with contextlib.suppress(OutputClosed):
            write(self._env.stderr, line + "\n")


def _make_progress(env: Environment) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=env.stderr, no_color=env.no_color, highlight=False)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=True,
                    redirect_stdout=False, redirect_stderr=False)
