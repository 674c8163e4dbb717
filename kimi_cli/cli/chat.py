"""`kimi chat [FILE...]`: a conversation about some files, with the model loaded once."""

from __future__ import annotations

from typing import Annotated

import typer

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app

ContinueOpt = Annotated[bool, typer.Option(
    "--continue", "-c", help="Resume the most recent conversation.")]
SessionOpt = Annotated[str | None, typer.Option(
    "--session", "-s", help="Resume the conversation NAME, or start one under that name.",
    metavar="NAME", show_default=False)]
ChatFormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="auto (rich on a terminal), rich or plain.")]


@app.command()
@o.with_settings("chat")
def chat(
    files: Annotated[list[str] | None, typer.Argument(
        help="Files (images, PDFs, videos) for the first message; more with /attach or @path.",
        metavar="FILE",
        show_default=False)] = None,
    system: o.SystemOpt = None,
    output_format: ChatFormatOpt = "auto",
    pages: o.PagesOpt = None,
    max_pages: o.MaxPagesOpt = None,
    fps: o.FpsOpt = None,
    max_frames: o.MaxFramesOpt = None,
    time_range: o.RangeOpt = None,
    resume: ContinueOpt = False,
    session: SessionOpt = None,
    flags: dict[str, object] | None = None,
) -> None:
    """Chat about images, PDFs and videos; follow-up questions reuse the cached context.

    Enter sends, Alt-Enter adds a line, /help lists the commands, Ctrl-D leaves. Every turn is saved;
    `kimi chat --continue` resumes the last conversation.
    """
    from kimi_cli.app.media import MediaFlags
    from kimi_cli.repl.launch import ChatInputs, run_chat

    media = MediaFlags(pages=pages, time_range=time_range, fps=fps, max_frames=max_frames, max_pages=max_pages)
    inputs = ChatInputs(files=list(files or []), output_format=output_format, system=system, media=media,
                        resume=resume, session=session)
    code = run_chat(inputs, flags or {})
    if code:
        raise typer.Exit(code)
