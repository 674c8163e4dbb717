"""Wiring for `kimi ask`: settings, stdin, inputs checked before the model loads, then one turn.

The work is the application layer's (`kimi_cli.app`); this module decides what the command line
means (which argument is the prompt, whether stdin is read) and what goes to stdout and stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from kimi_cli.app import inputs as app_inputs
from kimi_cli.app import media as app_media
from kimi_cli.app.preflight import check_settings, context_length, fit_budget
from kimi_cli.app.schema import check_schema_settings
from kimi_cli.cli.args import compose_prompt, split_args
from kimi_cli.config import load_settings
from kimi_cli.errors import UsageError, debug_enabled
from kimi_cli.textsafe import json_safe, printable

FORMATS = ("auto", "rich", "plain", "json", "jsonl")


@dataclass(frozen=True)
class AskInputs:
    """`kimi ask` arguments that are not settings (settings go through the precedence chain)."""

    args: list[str]
    output_format: str = "auto"
    system: str | None = None
    media: app_media.MediaFlags = app_media.MediaFlags()
    dry_run: bool = False
    each: bool = False  # `--each`: the prompt once per file, one model load
    output: str | None = None  # `--each --output results.jsonl`: append records, skip what is done


def check_format(output_format: str, allowed: tuple[str, ...] = FORMATS) -> None:
    """`--format` is checked before anything slow happens."""
    if output_format not in allowed:
        raise UsageError(f"--format {output_format}: unknown value", hint="use one of: " + ", ".join(allowed))


def note(text: str, level: str = "note") -> None:
    """A `kimi: note: ...` (or warning) line on stderr."""
    with contextlib.suppress(BrokenPipeError, OSError):
        sys.stderr.write(f"kimi: {level}: {printable(text)}\n")  # notes echo file names


def read_piped(files: list[str], settings: Any, dry_run: bool) -> str | None:
    """Piped stdin as prompt text, unless `-` takes stdin as a file or `no_stdin` is set."""
    if "-" in files or settings.no_stdin:
        return None
    piped = app_inputs.read_stdin_text(sys.stdin, wait=not dry_run)
    said = app_inputs.stdin_note(piped, sys.stderr)
    if said:
        note(said)
    return piped


def run_ask(inputs: AskInputs, flags: dict[str, Any]) -> int:
    """Everything `kimi ask` does; returns the exit code."""
    settings = load_settings(flags)
    if not inputs.each:
        check_format(inputs.output_format)
        if inputs.output is not None:
            raise UsageError("--output: only with --each", hint='kimi ask --each *.png "Describe this" --output out.jsonl')
    check_settings(settings)
    check_schema_settings(settings)
    for text in settings.notes:
        note(text, "warning")
    if inputs.each:
        from kimi_cli.cli.each import run_each

        return run_each(inputs, settings)
    files, prompt_arg = split_args(inputs.args, os.path.exists)
    opts = app_media.media_options(settings, inputs.media)
    piped = read_piped(files, settings, inputs.dry_run)
    extra = f"; stdin gave {len(piped)} characters (--no-stdin leaves it out)" if piped else ""
    with app_inputs.stdin_file(files, sys.stdin) as specs:
        if inputs.dry_run:
            prompt = compose_prompt(prompt_arg, piped) if (prompt_arg or piped) else ""
            plan = app_media.plan_inputs(specs, opts, settings.model, prompt)
            fit_budget(settings, plan.total_tokens, context_length(settings.model), extra)
            print_plan(plan, inputs.output_format)
            if inputs.output_format not in ("json", "jsonl"):
                from kimi_cli.app.weights import print_memory_plan

                print_memory_plan(settings)
            return 0
        prompt = compose_prompt(prompt_arg, piped)
        plan = app_media.plan_inputs(specs, opts, settings.model, prompt)
        settings, budget_note = fit_budget(settings, plan.total_tokens, context_length(settings.model), extra)
        from kimi_cli.app.engines import preflight

        preflight(settings)
        items, notes = app_media.load_planned(plan) if specs else ([], ())
        message = app_media.build_user_message(items, prompt)
        return _answer(settings, inputs, message, (*notes, *([budget_note] if budget_note else [])), files, prompt)


def print_plan(plan: Any, output_format: str) -> None:
    """`--dry-run`: the plan as a table (or JSON), without loading the model."""
    from kimi_cli.plan import plan_to_dict

    if output_format in ("json", "jsonl"):
        doc = json_safe(plan_to_dict(plan))  # non-UTF-8 file names as visible escapes, not surrogates
        sys.stdout.write(json.dumps(doc, indent=2 if output_format == "json" else None) + "\n")
        return
    from kimi_cli.render.plan import plan_lines

    sys.stdout.write("\n".join(plan_lines(plan)) + "\n")
    for text in plan.notes:
        note(text)


def _answer(settings: Any, inputs: AskInputs, message: Any, notes: tuple[str, ...],
            files: list[str], prompt: str) -> int:
    from kimi_cli.app.engines import make_engine
    from kimi_cli.app.turn import make_request, render_turn
    from kimi_cli.render import make_renderer
    from kimi_cli.render.base import RenderMeta
    from kimi_cli.render.env import Environment

    renderer = make_renderer(inputs.output_format, settings.thinking, Environment.from_system())
    engine = make_engine(settings)
    request = make_request((message,), settings, inputs.system)
    meta = RenderMeta(model=str(settings.model), files=tuple(files), prompt=prompt,
                      backend=getattr(engine, "backend", "local"))
    outcome = render_turn(engine, request, renderer, meta, notes=notes)
    if outcome.error is not None and outcome.error.detail and debug_enabled(sys.argv):
        sys.stderr.write(outcome.error.detail)
    return outcome.exit_code
