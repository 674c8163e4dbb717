"""Keep native libraries' own lines (libtiff, FFmpeg) off the user's stderr; tell whether they spoke."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file for the duration; the yielded list then holds
    the lines written there (for deciding on a note of our own; never shown raw)."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to capture
        yield lines
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read(1 << 16).decode("utf-8", "replace")
            lines.extend(line for line in text.splitlines() if line.strip())
