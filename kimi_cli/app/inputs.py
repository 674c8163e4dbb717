"""Reading the user's input from the process: piped stdin as text, `-` as a file, without surprises.

Piped text is added to the prompt (`git diff | kimi ask "Review this"`) unless the `no_stdin`
setting is on. `--dry-run` never waits: it takes only what stdin already holds.
"""

from __future__ import annotations

import os
import select
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kimi_cli.errors import MediaError, UsageError

#: Suffixes that make a missing last argument read as a mistyped file, not as a prompt.
MEDIA_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".pdf",
    ".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v",
)


def looks_like_file(arg: str, exists: Callable[[str], bool]) -> bool:
    """An existing path, `-` (stdin), `file.pdf:1-3`, or a word ending in a media suffix."""
    if arg == "-" or exists(arg):
        return True
    base = arg.rsplit(":", 1)[0] if ":" in arg else arg
    if base != arg and exists(base):
        return True
    return " " not in arg and arg.lower().endswith(MEDIA_SUFFIXES)


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _decode(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("stdin: piped data is not UTF-8 text",
                         hint="to send a binary file on stdin, pass `-` as a file argument") from None


def read_available(stdin: Any, idle_s: float = 0.2, limit: int = 64 << 20) -> tuple[bytes, bool]:
    """What stdin gives without waiting on a silent writer: read until EOF, or until nothing has
    arrived for `idle_s`. Returns the bytes and whether stdin was still open (then it was cut)."""
    try:
        fd = stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return b"", False
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        ready, _, _ = select.select([fd], [], [], idle_s)
        if not ready:
            return b"".join(chunks), True
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), True


def read_stdin_text(stdin: Any, wait: bool = True) -> str | None:
    """Piped text (None on a terminal). Undecodable bytes are an error, not mojibake.

    With `wait=False` a writer that stays silent is not waited for (`--dry-run` must not block on
    `sleep 20 | kimi ask ...`): what arrived until then is used.
    """
    if stdin is None or is_terminal(stdin):
        return None
    if not wait:
        data, _ = read_available(stdin)
        return _decode(data) or None
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    return _decode(data)


def stdin_note(text: str | None, stderr: Any) -> str | None:
    """`added N characters from stdin`, for a terminal's stderr (scripts keep a quiet stderr)."""
    if text and text.strip() and is_terminal(stderr):
        return f"added {len(text)} characters from stdin (--no-stdin turns this off)"
    return None


@contextmanager
def stdin_file(specs: list[str], stdin: Any) -> Iterator[list[Any]]:
    """Replace a `-` argument by a temporary file holding stdin's bytes (removed afterwards)."""
    from kimi_cli.app.media import input_specs

    if "-" not in specs:
        yield specs
        return
    if specs.count("-") > 1:
        raise UsageError("`-` (stdin) can be given only once", hint="save the other input to a file")
    if stdin is None or is_terminal(stdin):
        raise MediaError("-: stdin is a terminal, not a file", hint="pipe a file in: kimi ask - 'What is this?' < photo.jpg")
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    with tempfile.TemporaryDirectory(prefix="kimi-stdin-") as tmp:
        path = Path(tmp) / "stdin"
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        yield input_specs(specs, str(path))
