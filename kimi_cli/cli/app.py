"""The Typer app: declares the commands; each lives in its own small module."""

from __future__ import annotations

import typer

from kimi_cli import __version__

app = typer.Typer(
    name="kimi",
    help="Run Kimi-VL-A3B-Thinking-2506 locally on images, PDFs and videos.\n\n"
    "Examples:\n\n  kimi ask photo.jpg \"What is in this picture?\"\n\n"
    "  kimi ask report.pdf:1-3 \"Summarise these pages\" --format json\n\n"
    "  git diff | kimi ask \"Review this change\"",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kimi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Run Kimi-VL-A3B-Thinking-2506 locally. `--debug` (anywhere) shows tracebacks."""
    if ctx.invoked_subcommand is not None:
        return
    import sys

    if not sys.stdin.isatty():  # `kimi` alone opens a chat only where someone can type
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from kimi_cli.cli.chat import chat

    chat()


from kimi_cli.cli import ask as _ask  # noqa: E402  (registers the command on `app`)
from kimi_cli.cli import chat as _chat  # noqa: E402
from kimi_cli.cli import synth as _synth  # noqa: E402

__all__ = ["app", "_ask", "_synth", "_chat"]
from kimi_cli.cli import bench as _bench  # noqa: E402,F401
from kimi_cli.cli import quantize as _quantize  # noqa: E402,F401
from kimi_cli.cli import serve as _serve  # noqa: E402,F401
from kimi_cli.cli import warmup as _warmup  # noqa: E402,F401
