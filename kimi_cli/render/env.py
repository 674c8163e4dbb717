"""The process's output environment in one injectable value (after httpie's `Environment`).

Renderers never touch `sys.stdout`, `os.environ` or the wall clock directly; they get an
`Environment`, so tests hand them string buffers, fixed tty flags, a fixed size and a fake clock.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # closed or fake streams
        return False


@dataclass(frozen=True)
class Environment:
    """Output streams, whether they are terminals, colour preference, size and clock."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    #: NO_COLOR (https://no-color.org) is set and not empty.
    no_color: bool = False
    #: TERM=dumb: a terminal that cannot move the cursor.
    dumb_terminal: bool = False
    #: None: ask the terminal.
    width: int | None = None
    height: int | None = None
    #: Seconds, monotonic; replaced by a fake in tests so timings in golden files are fixed.
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_system(cls, environ: Mapping[str, str] | None = None) -> Environment:
        """The real environment of this process."""
        env = os.environ if environ is None else environ
        return cls(
            stdout=sys.stdout,
            stderr=sys.stderr,
            stdout_isatty=_isatty(sys.stdout),
            stderr_isatty=_isatty(sys.stderr),
            no_color=bool(env.get("NO_COLOR")),
            dumb_terminal=env.get("TERM") == "dumb",
        )

    @property
    def stderr_styled(self) -> bool:
        """Whether escape codes (dim thinking) may be written to stderr."""
        return self.stderr_isatty and not self.no_color and not self.dumb_terminal

    @property
    def stdout_live(self) -> bool:
        """Whether stdout can hold a live, redrawn area (needs cursor movement codes).

        NO_COLOR is read as "no escape codes at all": the Rich renderer then prints finished
        blocks only, which needs no cursor movement and still looks right.
        """
        return self.stdout_isatty and not self.no_color and not self.dumb_terminal


def mute_stream(stream: TextIO) -> None:
    """Point `stream`'s file descriptor at /dev/null after its reader went away.

    This is the recipe of Python's signal docs ("Note on SIGPIPE"): without it the interpreter's
    final flush of the stream's buffer fails again and prints "Exception ignored ... BrokenPipeError".
    Streams without a descriptor (test buffers) are left alone.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
