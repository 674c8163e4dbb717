"""Wiring for `kimi chat`: settings, the saved conversation, files checked, then the model and the REPL.

Order matters for the user: everything that can fail fast (a missing terminal, a bad option, a
missing file, an unknown session) fails before the model loads, and a resumed conversation is
printed before the load, so there is something to read while it takes its seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from kimi_cli.app.media import MediaFlags
from kimi_cli.config import data_dir, load_settings
from kimi_cli.errors import UsageError
from kimi_cli.repl.store import ChatRecord, SessionStore, check_name
from kimi_cli.settings import saved

CHAT_FORMATS = ("auto", "rich", "plain")


@dataclass(frozen=True)
class ChatInputs:
    """`kimi chat` arguments that are not settings."""

    files: list[str] = field(default_factory=list)
    output_format: str = "auto"
    system: str | None = None
    media: MediaFlags = field(default_factory=MediaFlags)
    resume: bool = False
    session: str | None = None


def require_terminal(stdin: TextIO) -> None:
    """`kimi chat` reads a person's typing; from a pipe, `kimi ask` is the tool."""
    try:
        tty = stdin.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        raise UsageError("kimi chat needs a terminal, and stdin is not one",
                         hint='for scripts and pipes use kimi ask: echo "Describe it" | kimi ask photo.jpg')


def open_record(store: SessionStore, inputs: ChatInputs,
                warn: Callable[[str], None] = lambda text: None) -> ChatRecord | None:
    """The saved conversation to resume (`--continue`: the latest readable; `--session NAME`), else None.

    The conversation is locked for this process first (`SessionBusy` if another chat has it open).
    """
    if inputs.resume and inputs.session:
        raise UsageError("--continue and --session cannot be combined", hint="--session NAME resumes that chat")
    if inputs.resume:
        return store.open_latest(warn)
    if inputs.session:
        store.lock(check_name(inputs.session))
        if store.exists(inputs.session):
            return store.load(inputs.session)
    return None


def saved_values(record: ChatRecord | None) -> dict[str, Any]:
    """A resumed conversation's model and the settings it keeps (`saved` in kimi_cli.settings)."""
    if record is None:
        return {}
    kept = {s.name: record.settings[s.name] for s in saved() if s.name in record.settings}
    return {"model": record.model or None, **kept}


def merged_flags(flags: Mapping[str, Any], record: ChatRecord | None) -> dict[str, Any]:
    """Flags given on the command line, over a resumed conversation's model and settings."""
    out = dict(flags)
    for key, value in saved_values(record).items():
        if out.get(key) is None:
            out[key] = value
    return out


def run_chat(inputs: ChatInputs, flags: Mapping[str, Any], stdin: TextIO | None = None) -> int:
    """Everything `kimi chat` does; returns the exit code."""
    from kimi_cli.app.media import media_options
    from kimi_cli.app.preflight import check_settings, context_length, fit_budget
    from kimi_cli.render.env import Environment
    from kimi_cli.repl.chat import PlannedMedia, Say, restore_messages
    from kimi_cli.repl.paths import resolve_spec
    from kimi_cli.repl.transcript import resume_lines

    require_terminal(sys.stdin if stdin is None else stdin)
    if inputs.output_format not in CHAT_FORMATS:
        raise UsageError(f"--format {inputs.output_format}: not for chat", hint="use auto, rich or plain")
    store = SessionStore(data_dir(os.environ) / "sessions")
    env = Environment.from_system()
    say = Say(env)
    record = open_record(store, inputs, lambda text: say.note(text, "warning"))
    settings = load_settings(flags, saved=saved_values(record), session=record.name if record else "")
    check_settings(settings)
    for text in settings.notes:
        say.note(text, "warning")
    fit_budget(settings, 0, context_length(settings.model))  # an explicit budget beyond the context
    media = PlannedMedia(media_options(settings, inputs.media), settings.model)
    files = [resolve_spec(f) for f in inputs.files]
    media.check(files)
    record = _prepared(record, store, settings, inputs)
    if record.turns:
        say.info("\n".join(resume_lines(record, shutil.get_terminal_size().columns)))
    messages = restore_messages(record, media, say)
    return _converse(settings, inputs, record, store, media, messages, files, env)


def _prepared(record: ChatRecord | None, store: SessionStore, settings: Any, inputs: ChatInputs) -> ChatRecord:
    """The conversation to go on with, its model and settings brought up to date."""
    if record is None:
        record = ChatRecord(name=inputs.session or store.claim_new())
    record.model = str(settings.model)
    record.settings = settings.saved_values()
    if inputs.system is not None:
        record.system = inputs.system
    return record


def _converse(settings: Any, inputs: ChatInputs, record: ChatRecord, store: SessionStore,
              media: Any, messages: list[Any], files: list[str], env: Any) -> int:
    from kimi_cli.app.engines import make_engine, preflight
    from kimi_cli.repl.chat import Chat
    from kimi_cli.repl.session import make_session, open_history, run_repl

    preflight(settings)
    engine = make_engine(settings, keep_cache=True)
    chat = Chat(engine, record, store, media, env, inputs.output_format, settings.seed, messages)
    chat.pending = list(dict.fromkeys(files))
    if not record.turns:
        chat.say.note("Enter sends, Alt-Enter adds a line, /help lists commands, Ctrl-D leaves")
    session = make_session(open_history(data_dir(os.environ) / "history"))
    return run_repl(chat, session)
