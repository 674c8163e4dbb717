"""Command-line options. Settings' flags are derived from `kimi_cli.settings.SETTINGS`; the rest are
declared once here as `Annotated` aliases.

A setting's flag is read as text (`None` when not given) and checked by `Setting.parse` in
`kimi_cli.config`, the same way as its env var and config key, so a bad value names the flag typed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from kimi_cli.settings import BY_NAME, Setting, for_command


def _metavar(s: Setting) -> str:
    if s.choices:
        return "[" + "|".join(s.choices) + "]"
    return {int: "INTEGER", float: "FLOAT"}.get(s.kind, "TEXT")


def setting_option(name: str) -> Any:
    """The `Annotated` option for setting `name` (text or a bare flag; None when not given)."""
    s = BY_NAME[name]
    decls = [s.flag, *([s.short] if s.short else [])]
    if s.kind is bool:
        return Annotated[bool | None, typer.Option(*decls, help=s.help_text(), show_default=False)]
    return Annotated[str | None, typer.Option(*decls, help=s.help_text(), metavar=_metavar(s), show_default=False)]


def _deprecated_option(s: Setting) -> Any:
    flag = "--" + (s.deprecated or "").replace("_", "-")
    return Annotated[str | None, typer.Option(flag, hidden=True, help=f"Deprecated: use {s.flag}.")]


def with_settings(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the flags of every setting `kimi COMMAND` takes; the command gets them as `flags=` by name.

    Deprecated names (`--engine`) come as hidden options under their old key; `kimi_cli.config`
    maps them onto the new setting with a warning.
    """
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "flags"]
        added = []
        for s in for_command(command):
            added.append(inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                           annotation=setting_option(s.name)))
            if s.deprecated:
                added.append(inspect.Parameter(s.deprecated, inspect.Parameter.KEYWORD_ONLY, default=None,
                                               annotation=_deprecated_option(s)))
        names = [p.name for p in added]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            flags = {name: kwargs.pop(name, None) for name in names}
            return func(*args, **kwargs, flags=flags)

        # The command's first parameter (its arguments) stays first; Click passes everything by name.
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*own[:1], *added, *own[1:])]
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper
    return decorate


ModelOpt = setting_option("model")
DeviceOpt = setting_option("device")
SystemOpt = Annotated[str | None, typer.Option(
    "--system", help="System prompt [default: the model's own, 'You are a helpful assistant'].",
    show_default=False)]
FormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="auto (rich on a terminal, plain in a pipe), rich, plain, json or jsonl.")]
PagesOpt = Annotated[str | None, typer.Option(
    "--pages", help="PDF pages to use, e.g. 1-3,7 (applies to every PDF; or write report.pdf:1-3).")]
MaxPagesOpt = Annotated[int | None, typer.Option(
    "--max-pages", min=1, help="Most PDF pages read when no selection is given [default: 20].", show_default=False)]
FpsOpt = Annotated[float | None, typer.Option("--fps", min=0.0, help="Video frames sampled per second.")]
MaxFramesOpt = Annotated[int | None, typer.Option("--max-frames", min=1, help="Most frames per video.")]
RangeOpt = Annotated[str | None, typer.Option(
    "--range", help="Video time range, e.g. 00:10-01:30 or 5-20 (seconds).")]
EachOpt = Annotated[bool, typer.Option(
    "--each", help="Run the prompt once per file (each file alone), with one model load; exit 1/3 if any failed.")]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", "-o", help="With --each: append one JSON line per file here; run again to skip files done.",
    show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the input plan without loading the model.")]
OutDirArg = Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")]
