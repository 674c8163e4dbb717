"""Wiring for `kimi ask`: settings, stdin, inputs checked before the model loads, then one turn."""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_cli.cli import debug_enabled
from kimi_cli.cli.args import compose_prompt, split_args
from kimi_cli.config import load_settings
from kimi_cli.errors import MediaError, UsageError

FORMATS = ("auto", "rich", "plain", "json", "jsonl")
THINKING = ("collapse", "show", "hide")
ENGINES = ("auto", "fast", "plain")


@dataclass(frozen=True)
class AskInputs:
    """`kimi ask` arguments that are not settings (settings go through the precedence chain)."""

    args: list[str]
    output_format: str = "auto"
    seed: int | None = None
    system: str | None = None
    pages: str | None = None
    fps: float | None = None
    max_frames: int | None = None
    time_range: str | None = None
    max_pages: int | None = None
    dry_run: bool = False


def check_choices(settings: dict[str, Any], output_format: str) -> None:
    """Closed-set options are checked before anything slow happens."""
    for value, allowed, flag in ((output_format, FORMATS, "--format"), (settings["thinking"], THINKING, "--thinking"),
                                 (settings["engine"], ENGINES, "--engine")):
        if value not in allowed:
            raise UsageError(f"{flag} {value}: unknown value", hint="use one of: " + ", ".join(allowed))


def read_stdin_text(stdin: Any) -> str | None:
    """Piped text (None on a terminal). Undecodable bytes are an error, not mojibake."""
    if stdin is None or stdin.isatty():
        return None
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("stdin: piped data is not UTF-8 text",
                         hint="to send a binary file on stdin, pass `-` as a file argument") from None


@contextmanager
def stdin_file(specs: list[str], stdin: Any) -> Iterator[list[Any]]:
    """Replace a `-` argument by a temporary file holding stdin's bytes (removed afterwards)."""
    from kimi_cli.cli.session import input_specs

    if "-" not in specs:
        yield specs
        return
    if specs.count("-") > 1:
        raise UsageError("`-` (stdin) can be given only once", hint="save the other input to a file")
    if stdin is None or stdin.isatty():
        raise MediaError("-: stdin is a terminal, not a file", hint="pipe a file in: kimi ask - 'What is this?' < photo.jpg")
    data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
    with tempfile.TemporaryDirectory(prefix="kimi-stdin-") as tmp:
        path = Path(tmp) / "stdin"
        path.write_bytes(data)
        yield input_specs(specs, str(path))


def run_ask(inputs: AskInputs, flags: dict[str, Any]) -> int:
    """Everything `kimi ask` does; returns the exit code."""
    from kimi_cli.cli.session import build_user_message, load_media, media_options, print_plan

    settings = load_settings(flags)
    check_choices(settings, inputs.output_format)
    files, prompt_arg = split_args(inputs.args, os.path.exists)
    piped = None if "-" in files else read_stdin_text(sys.stdin)
    opts = media_options(settings, inputs)
    with stdin_file(files, sys.stdin) as specs:
        if inputs.dry_run:
            prompt = compose_prompt(prompt_arg, piped) if (prompt_arg or piped) else ""
            print_plan(specs, opts, inputs.output_format, prompt, settings["model"])
            return 0
        prompt = compose_prompt(prompt_arg, piped)
        items, notes = load_media(specs, opts, settings["model"], prompt)
        message = build_user_message(items, prompt)
        return _answer(settings, inputs, message, notes, files, prompt)


def _answer(settings: dict[str, Any], inputs: AskInputs, message: Any, notes: tuple[str, ...],
            files: list[str], prompt: str) -> int:
    from kimi_cli.cli.session import load_engine
    from kimi_cli.conversation import GenerationSettings, Request
    from kimi_cli.events.types import Notice
    from kimi_cli.render import make_renderer
    from kimi_cli.render.base import RenderMeta, render_stream
    from kimi_cli.render.env import Environment

    renderer = make_renderer(inputs.output_format, settings["thinking"], Environment.from_system())
    engine = load_engine(settings)
    gen = GenerationSettings(max_new_tokens=settings["max_new_tokens"], temperature=settings["temperature"],
                             top_p=settings["top_p"], seed=inputs.seed)
    request = Request(messages=(message,), settings=gen, system_prompt=inputs.system)
    stream = engine.stream(request)
    events = itertools.chain([Notice(n, "warning") for n in notes], stream)
    meta = RenderMeta(model=str(settings["model"]), files=tuple(files), prompt=prompt)
    try:
        outcome = render_stream(renderer, meta, events, engine.cancel)
    finally:
        stream.close()  # stops and joins the generation thread if the renderer stopped early
    if outcome.error is not None and outcome.error.detail and debug_enabled(sys.argv):
        sys.stderr.write(outcome.error.detail)
    return outcome.exit_code
