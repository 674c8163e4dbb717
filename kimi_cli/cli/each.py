"""Wiring for `kimi ask --each FILE... PROMPT`: the files, a per-file request, then `app.batch.run_batch`.

Exit codes: 0 when every file was answered; 1 when any file's generation failed; else 3 when any
file's media could not be read; else 2 (a file's own usage problem, e.g. too long for the context);
130 after Ctrl-C (every file finished before it is in `--output`).
"""

from __future__ import annotations

import os
from typing import Any

from kimi_cli.errors import UsageError

EACH_FORMATS = ("auto", "plain", "jsonl")


def run_each(inputs: Any, settings: Any) -> int:
    """Everything `kimi ask --each` does after the settings are read; returns the exit code."""
    from kimi_cli.app import media as app_media
    from kimi_cli.app.batch import BatchJob, each_files, run_batch
    from kimi_cli.cli.args import compose_prompt, split_args
    from kimi_cli.cli.run import read_piped
    from kimi_cli.render.batch import BatchOutput
    from kimi_cli.render.env import Environment

    if inputs.output_format not in EACH_FORMATS:
        raise UsageError(f"--format {inputs.output_format}: not with --each",
                         hint="use --format jsonl (one object per file) or plain")
    if inputs.dry_run:
        raise UsageError("--dry-run: not with --each", hint="plan one file at a time: kimi ask --dry-run FILE PROMPT")
    files, prompt_arg = split_args(inputs.args, os.path.exists)
    files = list(each_files(files))
    prompt = compose_prompt(prompt_arg, read_piped(files, settings, False))
    opts = app_media.media_options(settings, inputs.media)
    from kimi_cli.app.engines import make_engine, preflight

    preflight(settings)
    job = BatchJob(files=tuple(files), prompt=prompt, output=inputs.output,
                   prepare=lambda f: _prepare(f, prompt, settings, opts, inputs.system),
                   make_engine=lambda: make_engine(settings))
    sink = BatchOutput(Environment.from_system(), jsonl=inputs.output_format == "jsonl")
    return run_batch(job, sink).exit_code


def _prepare(file: str, prompt: str, settings: Any, opts: Any, system: str | None) -> tuple[Any, tuple[str, ...]]:
    """One file's request and notes (raises KimiError for a file that cannot be used)."""
    from kimi_cli.app import media as app_media
    from kimi_cli.app.batch import group_files
    from kimi_cli.app.preflight import context_length, fit_budget
    from kimi_cli.app.turn import make_request

    plan = app_media.plan_inputs(group_files(file), opts, settings.model, prompt)
    fitted, budget_note = fit_budget(settings, plan.total_tokens, context_length(settings.model))
    items, notes = app_media.load_planned(plan)
    message = app_media.build_user_message(items, prompt)
    return make_request((message,), fitted, system), (*notes, *([budget_note] if budget_note else []))


def output_path(value: str | None) -> str | None:
    """`--output` checked: a file we can append to (its folder exists)."""
    if value is None:
        return None
    folder = os.path.dirname(os.path.abspath(value)) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--output {value}: the folder does not exist", hint="create it first")
    if os.path.isdir(value):
        raise UsageError(f"--output {value}: is a folder", hint="name a .jsonl file")
    return value

