"""Command-line entry point. `main()` runs the Typer app and maps every error to one line + exit code.

`[project.scripts]` points here rather than at the Typer app so that this mapping always runs.
"""

from __future__ import annotations

import os
import sys

from kimi_cli.errors import EXIT_GENERATION, EXIT_INTERRUPTED, EXIT_USAGE, KimiError, debug_enabled
from kimi_cli.textsafe import printable

__all__ = ["debug_enabled", "main", "report"]


def quiet_warnings(debug: bool) -> None:
    """Keep third-party libraries' warnings (deprecations, advice) off stderr unless `--debug`.

    Our own messages never go through `warnings`; what arrives there comes from torch, transformers,
    huggingface_hub and friends, and means nothing to a user of the CLI. The same holds for child
    processes we start (the environment variable is inherited).
    """
    if debug:
        return
    import warnings

    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def report(message: str, hint: str | None) -> None:
    """Print `kimi: error: ...` and an optional `hint: ...` on stderr (no colour, no markup)."""
    lines = [f"kimi: error: {printable(message)}"]  # messages echo file names: no terminal control
    if hint:
        lines.append(f"hint: {printable(hint)}")
    try:
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass


def main(argv: list[str] | None = None) -> None:
    """Run `kimi`; exits with the documented code (see kimi_cli.errors.EXIT_CODES)."""
    # typer parses options through pydantic, whose plugin discovery scans every installed package's
    # entry points on first use: time on every `kimi` start in a large environment, for nothing.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from kimi_cli.engine.fast.kernel_cache import use_kimi_cache

    use_kimi_cache()  # compiled GPU kernels live in kimi's cache (unless TRITON_CACHE_DIR says otherwise)
    from kimi_cli.cli.app import app

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    quiet_warnings(debug)
    try:
        code = app(args=argv, prog_name="kimi", standalone_mode=False)
    except KimiError as exc:
        if debug:  # the traceback, then the same line and exit code as without --debug
            import traceback

            traceback.print_exc()
        report(exc.message, exc.hint)
        code = exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        report("interrupted", None)
        code = EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - Typer/Click usage errors carry exit_code + format_message
        if debug:
            raise
        if hasattr(exc, "format_message"):
            report(exc.format_message(), _usage_hint(exc))
            code = getattr(exc, "exit_code", EXIT_USAGE)
        else:  # a bug of ours or a library's: still one line, never a traceback without --debug
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            report(f"internal error: {type(exc).__name__}: {first}",
                   "rerun with --debug for the traceback, and please report it")
            code = EXIT_GENERATION
    _exit(code if isinstance(code, int) else 0)


def _usage_hint(exc: Exception) -> str:
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "kimi"
    return f"see `{path} --help`"


def _exit(code: int) -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        # The reader went away (`| head`): silence the interpreter's own flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)
