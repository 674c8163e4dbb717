"""What each slash command does to a `Chat`. Parsing lives in `kimi_cli.repl.commands`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from kimi_cli.errors import UsageError
from kimi_cli.repl.chat import Chat
from kimi_cli.repl.commands import SETTING_NAMES, help_text, parse_command, parse_setting
from kimi_cli.repl.store import record_to_dict, write_atomic
from kimi_cli.repl.transcript import files_lines, stats_lines, to_markdown

#: A handler does the command; False means "leave the REPL".
Handler = Callable[[Chat, tuple[str, ...]], bool]
MARKDOWN_SUFFIXES = (".md", ".markdown", ".txt")


def run_command(chat: Chat, line: str) -> bool:
    """Parse and run one slash command; returns False when the REPL should end."""
    invocation = parse_command(line)
    return HANDLERS[invocation.name](chat, invocation.args)


def _attach(chat: Chat, args: tuple[str, ...]) -> bool:
    added = chat.attach(list(args))
    names = ", ".join(os.path.basename(spec) for spec in added)
    chat.say.info(f"attached {names}: sent with your next message")
    return True


def _files(chat: Chat, args: tuple[str, ...]) -> bool:
    chat.say.info("\n".join(files_lines(chat.record.turns, chat.pending)))
    return True


def _clear(chat: Chat, args: tuple[str, ...]) -> bool:
    had_turns = bool(chat.record.turns)
    old = chat.clear()
    kept = f" (the last one is saved: kimi chat --session {old})" if had_turns else ""
    chat.say.info(f"new conversation{kept}")
    return True


def _think(chat: Chat, args: tuple[str, ...]) -> bool:
    if not chat.record.turns:
        raise UsageError("/think: no answer yet")
    thinking = chat.record.turns[-1].thinking.strip()
    chat.say.info(thinking or "(the last answer came without thinking)")
    return True


def _retry(chat: Chat, args: tuple[str, ...]) -> bool:
    chat.retry()
    return True


def save_transcript(chat: Chat, target: str | None) -> Path:
    """Write the conversation to `target` (default `kimi-chat-NAME.md`): Markdown or JSON by suffix."""
    path = Path(os.path.expanduser(target or f"kimi-chat-{chat.record.name}.md"))
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(record_to_dict(chat.record), ensure_ascii=False, indent=1) + "\n"
    elif suffix in MARKDOWN_SUFFIXES:
        text = to_markdown(chat.record)
    else:
        raise UsageError(f"/save {path}: unknown format {suffix or '(no suffix)'}",
                         hint="end the name with .md (Markdown) or .json")
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"/save {path}: {exc.strerror or exc}") from None
    return path


def _save(chat: Chat, args: tuple[str, ...]) -> bool:
    path = save_transcript(chat, args[0] if args else None)
    chat.say.info(f"saved {len(chat.record.turns)} turns to {path}")
    return True


def _stats(chat: Chat, args: tuple[str, ...]) -> bool:
    chat.say.info("\n".join(stats_lines(chat.record.turns)))
    return True


def _set(chat: Chat, args: tuple[str, ...]) -> bool:
    settings = chat.record.settings
    if not args:
        chat.say.info("\n".join(f"{key} = {settings[name]}" for key, name in SETTING_NAMES.items()))
        return True
    if len(args) != 2:
        raise UsageError("/set: missing value", hint=f"usage: /set {args[0]} VALUE")
    name, value = parse_setting(*args)
    settings[name] = value
    chat.save()
    chat.say.info(f"{args[0]} = {value}")
    return True


def _help(chat: Chat, args: tuple[str, ...]) -> bool:
    chat.say.info(help_text())
    return True


def _exit(chat: Chat, args: tuple[str, ...]) -> bool:
    return False


HANDLERS: dict[str, Handler] = {
    "attach": _attach, "files": _files, "clear": _clear, "think": _think, "retry": _retry,
    "save": _save, "stats": _stats, "set": _set, "help": _help, "exit": _exit,
}
