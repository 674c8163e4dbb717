"""Slash commands: one table, pure parsing, built-in help, and "did you mean" for typos.

Nothing here touches the engine or the terminal: `parse_command` turns a line into an
`Invocation` (or raises `UsageError` with a hint), and `parse_setting` checks a `/set` value
(the settings `/set` takes are those `kimi_cli.settings` declares settable).
The REPL (`kimi_cli.repl.handlers`) decides what each command does.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.settings import Setting, settable


@dataclass(frozen=True)
class CommandSpec:
    """One slash command: its name, argument synopsis, one-line help and argument counts."""

    name: str
    synopsis: str
    summary: str
    min_args: int = 0
    max_args: int | None = 0  # None: any number
    aliases: tuple[str, ...] = ()
    bang: bool = False  # also `/name!`: do it even where it would replace something


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("attach", "FILE...", "attach files to the next message (also: @path inside a message)",
                1, None),
    CommandSpec("files", "", "list the files attached to this conversation"),
    CommandSpec("clear", "", "start a new conversation (the old one stays saved)"),
    CommandSpec("think", "", "show the last answer's full thinking"),
    CommandSpec("retry", "", "generate the last answer again"),
    CommandSpec("save", "[PATH]", "write the transcript: Markdown (.md) or JSON (.json); /save! replaces a file",
                0, 1, bang=True),
    CommandSpec("stats", "", "tokens computed vs reused from the cache, speed: last turn and totals"),
    CommandSpec("set", "[KEY VALUE]", "change a setting; without arguments, list them", 0, 2),
    CommandSpec("help", "", "show this help", aliases=("?",)),
    CommandSpec("exit", "", "leave (Ctrl-D does the same)", aliases=("quit", "q")),
)

_BY_NAME: dict[str, CommandSpec] = {
    key: spec for spec in COMMANDS for key in (spec.name, *spec.aliases)
}
#: A command word is `/` and letters; `/home/me/cat.png what is this` is a message, not a command.
_COMMAND_WORD = re.compile(r"^/([A-Za-z_?-]*)(!?)(?=\s|$)")


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: the command's canonical name and its arguments (shell-style quoting)."""

    name: str
    args: tuple[str, ...] = ()
    force: bool = False  # typed as `/name!`


def is_command(line: str) -> bool:
    """Whether `line` is a slash command rather than a message."""
    return _COMMAND_WORD.match(line.strip()) is not None


def split_words(text: str) -> list[str]:
    """Arguments split like a shell does: quotes and backslashes keep spaces inside a file name."""
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"cannot read the arguments: {exc}", hint='close the quote: /attach "my file.png"') from None


def parse_command(line: str) -> Invocation:
    """Parse `/name args...`; unknown names and wrong argument counts raise `UsageError`."""
    match = _COMMAND_WORD.match(line.strip())
    if match is None:
        raise UsageError(f"not a command: {line.strip()[:40]}", hint="commands start with /, e.g. /help")
    word = match.group(1).lower()
    spec = _BY_NAME.get(word)
    if spec is None:
        raise UsageError(f"unknown command /{word}", hint=_unknown_hint(word))
    force = bool(match.group(2))
    if force and not spec.bang:
        raise UsageError(f"unknown command /{word}!", hint=f"/{spec.name} has no ! form; type /{spec.name}")
    args = tuple(split_words(line.strip()[match.end():]))
    _check_count(spec, args)
    return Invocation(spec.name, args, force)


def _check_count(spec: CommandSpec, args: tuple[str, ...]) -> None:
    too_few = len(args) < spec.min_args
    too_many = spec.max_args is not None and len(args) > spec.max_args
    if too_few or too_many:
        usage = f"/{spec.name} {spec.synopsis}".rstrip()
        raise UsageError(f"/{spec.name}: {'missing arguments' if too_few else 'too many arguments'}",
                         hint=f"usage: {usage}")


def suggest(word: str) -> str | None:
    """The command `word` most likely meant: a unique prefix match, else the closest spelling."""
    names = [spec.name for spec in COMMANDS]
    prefixed = [name for name in names if word and name.startswith(word)]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(word, list(_BY_NAME), n=1, cutoff=0.5)
    return _BY_NAME[close[0]].name if close else None


def _unknown_hint(word: str) -> str:
    guess = suggest(word)
    return f"did you mean /{guess}? (/help lists the commands)" if guess else "/help lists the commands"


def help_text() -> str:
    """The command table and the keys, as shown by /help."""
    width = max(len(f"/{s.name} {s.synopsis}".rstrip()) for s in COMMANDS)
    lines = ["Commands:"]
    for spec in COMMANDS:
        left = f"/{spec.name} {spec.synopsis}".rstrip()
        lines.append(f"  {left.ljust(width)}  {spec.summary}")
    lines += ["", "Settings for /set:"]
    lines += [f"  {key.ljust(width)}  {doc}" for key, doc in SETTINGS.items()]
    lines += ["", "Keys:"]
    lines += [f"  {key.ljust(width)}  {doc}" for key, doc in KEYS]
    return "\n".join(lines)


#: Documented keys (the README section lists the same).
KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Alt-Enter, Esc Enter, Ctrl-J", "new line inside the message (pasted text keeps its lines)"),
    ("Tab", "complete a file name after /attach or @"),
    ("Up / Down", "earlier messages (history is kept between sessions)"),
    ("Ctrl-C", "while generating: stop the answer (the part written stays); at the prompt: clear the line"),
    ("Ctrl-D", "leave (on an empty line)"),
)

def _set_keys() -> dict[str, Setting]:
    """Every word `/set` takes (key, name, aliases) -> its setting."""
    keys: dict[str, Setting] = {}
    for setting in settable():
        for word in (setting.key, setting.name, *setting.set_aliases):
            keys[word] = setting
    return keys


#: `/set` keys and their one-line help, derived from the settings declared `settable`.
SETTINGS: dict[str, str] = {s.key: s.help for s in settable()}


def parse_setting(key: str, value: str) -> tuple[str, Any]:
    """Check `/set KEY VALUE`; returns (setting name, converted value) or raises `UsageError`."""
    norm = key.lower().replace("-", "_")
    setting = _set_keys().get(norm)
    if setting is None:
        close = difflib.get_close_matches(norm, list(SETTINGS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]}?" if close else "keys: " + ", ".join(SETTINGS)
        raise UsageError(f"/set: unknown setting {key!r}", hint=hint)
    return setting.name, setting.parse(value, f"/set {setting.key}", echo=True)
