"""Renderers: turn events into terminal output (Rich panels, plain text, JSON, JSON lines).

    renderer = make_renderer(fmt, thinking, Environment.from_system())
    outcome = render_stream(renderer, RenderMeta(model, files, prompt), engine.stream(request), engine.cancel)
    return outcome.exit_code

See `kimi_cli.render.base` for the contract every renderer keeps.
"""

from __future__ import annotations

from typing import Literal

from kimi_cli.render.base import (
    Outcome,
    OutputClosed,
    Renderer,
    RenderMeta,
    ThinkingMode,
    render_stream,
)
from kimi_cli.render.env import Environment

Format = Literal["auto", "rich", "plain", "json", "jsonl"]

__all__ = [
    "Environment",
    "Format",
    "Outcome",
    "OutputClosed",
    "RenderMeta",
    "Renderer",
    "ThinkingMode",
    "make_renderer",
    "render_stream",
    "resolve_format",
]


def resolve_format(fmt: Format, env: Environment) -> Literal["rich", "plain", "json", "jsonl"]:
    """`auto` is Rich when stdout is a terminal and plain otherwise (a pipe, a file)."""
    if fmt == "auto":
        return "rich" if env.stdout_isatty else "plain"
    return fmt


def make_renderer(fmt: Format, thinking: ThinkingMode, env: Environment) -> Renderer:
    """A fresh renderer for one turn, writing to `env`'s streams."""
    kind = resolve_format(fmt, env)
    if kind == "rich":
        # Rich (and markdown-it) load only when a terminal needs them.
        from kimi_cli.render.panels import PanelsRenderer, make_console

        console = make_console(
            env.stdout, terminal=env.stdout_isatty, color=not env.no_color, width=env.width, height=env.height
        )
        err = None if env.stderr_isatty else env.stderr
        return PanelsRenderer(console, thinking, clock=env.clock, live=env.stdout_live, err=err)
    if kind == "json":
        from kimi_cli.render.jsonl import JsonRenderer

        return JsonRenderer(env, thinking)
    if kind == "jsonl":
        from kimi_cli.render.jsonl import JsonLinesRenderer

        return JsonLinesRenderer(env, thinking)
    from kimi_cli.render.plain import PlainRenderer

    return PlainRenderer(env, thinking)
