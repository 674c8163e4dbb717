"""The error hierarchy and the exit codes. This module is the only place exit codes live.

Every failure a user can cause or meet is a `KimiError`: it carries one line of message, an optional
hint, and the process exit code. `kimi_cli.cli.main` turns it into `kimi: error: ...` on stderr.
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_GENERATION = 1
EXIT_USAGE = 2
EXIT_MEDIA = 3
EXIT_MODEL = 4
EXIT_INTERRUPTED = 130


class KimiError(Exception):
    """Base of every error the CLI reports as one line plus an optional hint."""

    exit_code: int = EXIT_GENERATION

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(KimiError):
    """Bad command-line usage: unknown option values, missing prompt, wrong combination."""

    exit_code = EXIT_USAGE


class MediaError(KimiError):
    """An input file is missing, unreadable, of an unsupported kind, corrupt or out of range."""

    exit_code = EXIT_MEDIA


class ModelLoadError(KimiError):
    """The model cannot be found, fetched, parsed or placed on the device."""

    exit_code = EXIT_MODEL


class GenerationError(KimiError):
    """Generation failed after the model loaded (out of memory, a kernel error, ...)."""

    exit_code = EXIT_GENERATION


#: Documented in the README; tests check that the two agree.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_GENERATION: "generation failed after the model loaded",
    EXIT_USAGE: "usage error (bad option, missing prompt, no terminal for `kimi chat`)",
    EXIT_MEDIA: "bad input file (missing, unreadable, unsupported, corrupt, out of range)",
    EXIT_MODEL: "model missing, unreachable, invalid, or too big for the device",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C (partial output kept)",
}


def debug_enabled(argv: list[str]) -> bool:
    """`--debug` anywhere on the command line, or `KIMI_DEBUG=1`: tracebacks instead of one line."""
    return "--debug" in argv or os.environ.get("KIMI_DEBUG", "") not in ("", "0")
