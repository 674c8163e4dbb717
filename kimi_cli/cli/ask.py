"""`kimi ask FILE... PROMPT`: one question about some files, answered and streamed."""

from __future__ import annotations

from typing import Annotated

import typer

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app


@app.command()
def ask(
    args: Annotated[list[str] | None, typer.Argument(
        help="Files (images, PDFs, videos; `-` reads one from stdin), then the prompt. "
        "Without a prompt argument the prompt is read from stdin.", show_default=False,
        metavar="FILE... PROMPT")] = None,
    model: o.ModelOpt = None,
    device: o.DeviceOpt = None,
    dtype: o.DtypeOpt = None,
    attention: o.AttentionOpt = None,
    engine: o.EngineOpt = None,
    max_new_tokens: o.MaxNewTokensOpt = None,
    temperature: o.TemperatureOpt = None,
    top_p: o.TopPOpt = None,
    seed: o.SeedOpt = None,
    system: o.SystemOpt = None,
    output_format: o.FormatOpt = "auto",
    thinking: o.ThinkingOpt = None,
    pages: o.PagesOpt = None,
    fps: o.FpsOpt = None,
    max_frames: o.MaxFramesOpt = None,
    time_range: o.RangeOpt = None,
    max_pages: o.MaxPagesOpt = None,
    max_image_tokens: o.MaxImageTokensOpt = None,
    dry_run: o.DryRunOpt = False,
) -> None:
    """Ask about images, PDFs and videos; the answer streams to stdout, the thinking to the terminal.

    Piped text comes first as context, then the prompt: `git diff | kimi ask "Review this"`.
    """
    from kimi_cli.cli.run import AskInputs, run_ask

    flags = o.setting_flags(
        model=model, device=device, dtype=dtype, attention=attention, engine=engine,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, thinking=thinking,
        max_image_tokens=max_image_tokens,
    )
    inputs = AskInputs(
        args=list(args or []), output_format=output_format, seed=seed, system=system, pages=pages,
        fps=fps, max_frames=max_frames, time_range=time_range, max_pages=max_pages, dry_run=dry_run,
    )
    code = run_ask(inputs, flags)
    if code:
        raise typer.Exit(code)
