"""Keep the terminal from echoing keys into a live area while it is on screen.

A live area is redrawn by moving the cursor up as many lines as it drew. The terminal's own echo
of a key breaks that count: Ctrl-C is echoed as `^C` right after the area's last line, which is a
full-width panel border, so the echo wraps onto a new line; the next redraw (and the final erase)
then goes up one line too few and leaves the area's first line behind (a stray `╭─ Thinking…`
border, an answer line printed twice). Type-ahead does the same. `EchoOff` turns echo off while
the area is up (`ECHO`, `ECHOCTL`) and keeps the interrupt from flushing output already written
(`NOFLSH`); keys typed meanwhile still arrive, for the shell or the next chat prompt.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any

try:
    import termios
except ImportError:  # pragma: no cover - not POSIX
    termios = None  # type: ignore[assignment]


class EchoOff:
    """Terminal echo off on `stream`'s terminal until `restore()` (a no-op off a terminal)."""

    def __init__(self, stream: IO[Any]) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        fd = _foreground_tty(stream)
        if fd is None or termios is None:
            return
        try:
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] = (quiet[3] & ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))) | termios.NOFLSH
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        except (OSError, termios.error):
            return
        self._fd, self._saved = fd, saved

    def restore(self) -> None:
        """Put the terminal back as it was; safe to call twice."""
        fd, saved, self._fd, self._saved = self._fd, self._saved, None, None
        if fd is not None and saved is not None and termios is not None:
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSANOW, saved)


def _foreground_tty(stream: IO[Any]) -> int | None:
    """`stream`'s descriptor if it is a terminal we are in the foreground of, else None.

    A background job changing terminal modes would be stopped by SIGTTOU, so it must not try.
    """
    try:
        fd = stream.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return fd
