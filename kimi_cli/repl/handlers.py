"""What each slash command does to a `Chat`. Parsing lives in `kimi_cli.repl.commands`."""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

from kimi_cli.errors import UsageError
from kimi_cli.repl.chat import Chat
from kimi_cli.repl.commands import help_text, parse_command, parse_setting
from kimi_cli.repl.store import record_to_json, write_atomic
from kimi_cli.repl.transcript import files_lines, stats_lines, to_markdown
from kimi_cli.settings import settable

#: A handler does the command; False means "leave the REPL".
Handler = Callable[[Chat, tuple[str, ...]], bool]
MARKDOWN_SUFFIXES = (".md", ".markdown", ".txt")


def run_command(chat: Chat, line: str) -> bool:
    """Parse and run one slash command; returns False when the REPL should end."""
    invocation = parse_command(line)
    return HANDLERS[invocation.name + "!" * invocation.force](chat, invocation.args)


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


def save_transcript(chat: Chat, target: str | None, force: bool = False) -> Path:
    """Write the conversation to `target` (default `kimi-chat-NAME.md`): Markdown or JSON by suffix.

    An existing file is replaced only with `force` (`/save!`), and keeps its permissions; a new
    file gets the usual ones (the umask). A missing folder is an error, not made on the quiet.
    """
    typed = target or f"kimi-chat-{chat.record.name}.md"
    path = Path(os.path.expanduser(typed))
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = record_to_json(chat.record)
    elif suffix in MARKDOWN_SUFFIXES:
        text = to_markdown(chat.record)
    else:
        raise UsageError(f"/save {path}: unknown format {suffix or '(no suffix)'}",
                         hint="end the name with .md (Markdown) or .json")
    path, mode = _save_target(path, typed, force)
    try:
        write_atomic(path, text, mode)
    except OSError as exc:
        raise UsageError(f"/save {path}: {exc.strerror or exc}") from None
    except UnicodeEncodeError:
        raise UsageError(f"/save {path}: the conversation holds text that cannot be written as UTF-8",
                         hint="save it as .json, which keeps every character") from None
    return path


def _save_target(path: Path, typed: str, force: bool) -> tuple[Path, int]:
    """Where `/save` writes (a symlink's target) and the file's mode; refuses what must not be replaced."""
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"/save {path}: there is no folder {folder}",
                         hint=f"make it first (mkdir -p {shlex.quote(str(folder))}) or save elsewhere")
    try:
        st = path.stat()
    except FileNotFoundError:
        return path, 0o666 & ~_umask()
    except OSError as exc:
        raise UsageError(f"/save {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"/save {path}: exists and is not a regular file", hint="pick another name")
    if not force:
        raise UsageError(f"/save {path}: the file exists", hint=f"/save! {shlex.quote(typed)} replaces it")
    return (path.resolve() if path.is_symlink() else path), stat.S_IMODE(st.st_mode)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _save(chat: Chat, args: tuple[str, ...], force: bool = False) -> bool:
    path = save_transcript(chat, args[0] if args else None, force)
    chat.say.info(f"saved {len(chat.record.turns)} turns to {path}")
    return True


def _save_over(chat: Chat, args: tuple[str, ...]) -> bool:
    return _save(chat, args, force=True)


def _stats(chat: Chat, args: tuple[str, ...]) -> bool:
    chat.say.info("\n".join(stats_lines(chat.record.turns)))
    return True


def _set(chat: Chat, args: tuple[str, ...]) -> bool:
    settings = chat.record.settings
    if not args:
        chat.say.info("\n".join(f"{s.key} = {settings.get(s.name, s.default)}" for s in settable()))
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
    "save": _save, "save!": _save_over, "stats": _stats, "set": _set, "help": _help, "exit": _exit,
}
