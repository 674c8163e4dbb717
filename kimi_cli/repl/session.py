"""The prompt: a prompt_toolkit session with history, keys and completion, and the read-send loop.

Keys (also in /help and the README):
* Enter sends; Alt-Enter (Esc then Enter) or Ctrl-J starts a new line. Pasted text arrives as one
  bracketed paste, so its lines stay in one message instead of each being sent.
* Ctrl-C at the prompt clears the line (during generation `render_stream` turns it into a cancel).
* Ctrl-D on an empty line leaves.
* Tab completes file names after `/attach ` and `@`, and command names after `/`.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

from kimi_cli.errors import KimiError, debug_enabled
from kimi_cli.repl.chat import Chat
from kimi_cli.repl.commands import COMMANDS, is_command
from kimi_cli.repl.handlers import run_command
from kimi_cli.repl.paths import PathCompleter
from kimi_cli.repl.store import private_folder


def key_bindings() -> KeyBindings:
    """Enter sends, Alt-Enter / Ctrl-J add a line, Ctrl-C clears the line."""
    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.complete_state = None  # the text already shows the highlighted choice: keep it
            if len(state.completions) > 1:
                return  # Enter picked one of several; a second Enter sends
        buffer.validate_and_handle()

    @bindings.add("escape", "enter")
    @bindings.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _clear(event: KeyPressEvent) -> None:
        event.current_buffer.reset()

    return bindings


def open_history(path: Path | None) -> History:
    """History kept in `path`, private like the sessions (folder 0700, file 0600); in memory without one."""
    if path is None:
        return InMemoryHistory()
    try:
        private_folder(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)  # made readable to others by an older kimi: typed text is private
        finally:
            os.close(fd)
    except OSError:
        return InMemoryHistory()
    return FileHistory(str(path))


def make_session(history: History, **io: Any) -> PromptSession[str]:
    """The prompt session; `io` may pass `input=` and `output=` (tests use a pipe)."""
    return PromptSession(
        multiline=True,  # Enter is rebound to send; multi-line text is edited in place
        key_bindings=key_bindings(),
        history=history,
        completer=PathCompleter(spec.name for spec in COMMANDS),
        complete_while_typing=False,
        prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
        enable_open_in_editor=False,
        **io,
    )


def handle_line(chat: Chat, line: str) -> bool:
    """Run a command or send a message; errors are shown and the REPL goes on. False: leave."""
    if not line.strip():
        return True
    try:
        if is_command(line):
            return run_command(chat, line)
        chat.send(line)
    except KimiError as exc:
        chat.say.error(exc)
    except KeyboardInterrupt:
        chat.say.note("cancelled")
    except Exception as exc:  # a bug must not end the conversation: report it and go on
        chat.say.error(unexpected(line, exc))
        if debug_enabled(sys.argv):
            chat.say.raw(traceback.format_exc())
    return True


def unexpected(line: str, exc: Exception) -> KimiError:
    """One error line for an exception no handler expected (the conversation so far is saved)."""
    what = line.split()[0] if is_command(line) else "sending that message"
    detail = (str(exc).splitlines() or [""])[0][:200]
    return KimiError(f"{what} failed: {type(exc).__name__}{': ' + detail if detail else ''}",
                     hint="this is a bug in kimi; run with --debug to see the traceback")


def run_repl(chat: Chat, session: PromptSession[str]) -> int:
    """Read lines until /exit or Ctrl-D; returns the exit code (0)."""
    while True:
        try:
            line = session.prompt(chat.prompt_text)
        except KeyboardInterrupt:  # a Ctrl-C that reached us as a signal, not as a key
            continue
        except EOFError:
            break
        if not handle_line(chat, line):
            break
    return 0
