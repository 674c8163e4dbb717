"""`kimi ask FILE... PROMPT`: one question about some files, answered and streamed."""

from __future__ import annotations

from typing import Annotated

import typer

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app


@app.command()
@o.with_settings("ask")
def ask(
    args: Annotated[list[str] | None, typer.Argument(
        help="Files (images, PDFs, videos; `-` reads one from stdin), then the prompt. "
        "Without a prompt argument the prompt is read from stdin.", show_default=False,
        metavar="FILE... PROMPT")] = None,
    system: o.SystemOpt = None,
    output_format: o.FormatOpt = "auto",
    pages: o.PagesOpt = None,
    fps: o.FpsOpt = None,
    max_frames: o.MaxFramesOpt = None,
    time_range: o.RangeOpt = None,
    max_pages: o.MaxPagesOpt = None,
    dry_run: o.DryRunOpt = False,
    each: o.EachOpt = False,
    output: o.OutputOpt = None,
    flags: dict[str, object] | None = None,
) -> None:
    """Ask about images, PDFs and videos; the answer streams to stdout, the thinking to the terminal.

    Piped text comes first as context, then the prompt: `git diff | kimi ask "Review this"`.
    With --each, the prompt runs once per file with one model load: `kimi ask --each *.png "Caption this"`.
    """
    from kimi_cli.app.media import MediaFlags
    from kimi_cli.cli.each import output_path
    from kimi_cli.cli.run import AskInputs, run_ask

    media = MediaFlags(pages=pages, time_range=time_range, fps=fps, max_frames=max_frames, max_pages=max_pages)
    inputs = AskInputs(args=list(args or []), output_format=output_format, system=system, media=media,
                       dry_run=dry_run, each=each, output=output_path(output))
    code = run_ask(inputs, flags or {})
    if code:
        raise typer.Exit(code)
