"""Saved conversations: one JSON file per chat in `$XDG_DATA_HOME/kimi/sessions/NAME.json`.

The REPL writes the file after every turn, atomically (a temporary file in the same folder, then
`os.replace`), so a crash or `kill -9` leaves either the previous or the new version, never half a
file, and `kimi chat --continue` picks up where it stopped. Attachments are stored as absolute paths
(with any `:1-3` page selection) and read again on resume; images are never copied into the file.

One process at a time has a conversation open: `lock(name)` takes `sessions/.NAME.lock` (see
`kimi_cli.repl.lock`) and a second `kimi chat` on the same name is refused. As a second line of
defence `save` checks that the file is still the one this process loaded or last wrote; if another
program replaced it meanwhile, `save` raises `SessionChanged` instead of writing over turns it
never saw. The folder is private (0700) and the files are 0600.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kimi_cli.errors import UsageError
from kimi_cli.repl.lock import Busy, FileLock
from kimi_cli.repl.records import (  # noqa: F401 - re-exported: the store's callers use these names
    FORMAT_VERSION,
    BadRecord,
    ChatRecord,
    TurnRecord,
    record_from_dict,
    record_to_dict,
    record_to_json,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: A saved chat is text; anything bigger is not one of ours (and would only eat memory).
MAX_SESSION_BYTES = 64 * 1024 * 1024
_BROKEN_HINT = ("the file is damaged or was edited by hand; move it aside to keep it, "
                "or pick another name with --session")
Stamp = tuple[int, int, int] | None


class SessionBusy(UsageError):
    """The conversation is open in another `kimi chat`."""


class SessionChanged(Exception):
    """The session file was replaced by another writer since this process read or wrote it."""


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def write_atomic(path: Path, text: str, mode: int = 0o600) -> os.stat_result:
    """Write `text` to `path` so that readers (and a crash) see the old or the new file, whole.

    The folder must exist. The file gets `mode`; returns the new file's status.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
            status = os.fstat(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return status


def private_folder(path: Path, levels: int = 1) -> Path:
    """`path` made if missing; its last `levels` parts (when made now) readable by the user alone."""
    if levels > 1:
        private_folder(path.parent, levels - 1)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    return path


def check_name(name: str) -> str:
    """A session name is a plain file name: letters, digits, `.`, `_`, `-`."""
    if not _NAME.match(name):
        raise UsageError(f"--session {name!r}: not a valid name",
                         hint="use letters, digits, '.', '_' and '-' (at most 100)")
    return name


def _read_text(path: Path) -> tuple[str, os.stat_result]:
    """The file's text, refusing what is not a regular file of sane size or not UTF-8."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BadRecord("not a regular file")
        if st.st_size > MAX_SESSION_BYTES:
            raise BadRecord(f"too big for a saved chat ({st.st_size / 2**20:.0f} MB; the limit is "
                            f"{MAX_SESSION_BYTES // 2**20} MB)")
        data = handle.read(MAX_SESSION_BYTES + 1)
    try:
        return data.decode("utf-8"), st
    except UnicodeDecodeError as exc:
        raise BadRecord(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def parse_session(text: str) -> ChatRecord:
    """A conversation from the text of its file; `BadRecord` says what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        ends = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (the file ends early)" if ends else ""
        raise BadRecord(f"not valid JSON{cut}: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise BadRecord(f"not valid JSON ({type(exc).__name__})") from None
    return record_from_dict(data)


class SessionStore:
    """The folder of saved conversations, and the locks this process holds on them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._locks: dict[str, FileLock] = {}
        self._stamps: dict[str, Stamp] = {}

    def path(self, name: str) -> Path:
        """Where the conversation `name` is saved."""
        return self.folder / f"{check_name(name)}.json"

    # -- locks ---------------------------------------------------------------------------------

    def lock(self, name: str) -> None:
        """Hold `name` for this process (until `unlock` or exit); `SessionBusy` if another has it."""
        if name in self._locks:
            return
        if not self._locks:
            atexit.register(self.close)  # tidy lock files of chats never saved (the locks die anyway)
        path = self.path(name)
        try:
            self._locks[name] = FileLock(private_folder(self.folder, 2) / f".{path.stem}.lock")
        except Busy as busy:
            who = f" (pid {busy.pid})" if busy.pid else ""
            raise SessionBusy(f"chat {name!r} is open in another kimi chat{who}",
                              hint="leave that chat first, or use another name: kimi chat --session NEW") from None
        except OSError as exc:
            raise UsageError(f"{self.folder}: cannot lock chat {name!r} ({exc.strerror or exc})",
                             hint="chats are saved there: make it writable, or set XDG_DATA_HOME") from None

    def unlock(self, name: str) -> None:
        """Let another process open `name` (the lock file goes too if nothing was saved under it)."""
        lock = self._locks.pop(name, None)
        if lock is not None:
            lock.release(remove=not self.exists(name))

    def close(self) -> None:
        """Let go of every conversation this store holds (the kernel would at exit, too)."""
        for name in list(self._locks):
            self.unlock(name)
        atexit.unregister(self.close)

    def claim_new(self, base: str | None = None) -> str:
        """A fresh name (`base`, else the current time; then `-2`, `-3`...), unused and locked for us."""
        base = (base or time.strftime("%Y%m%d-%H%M%S"))[:90]
        name, n = base, 1
        while True:
            if not self.exists(name):
                try:
                    self.lock(name)
                    if not self.exists(name):  # made between the check and the lock
                        return name
                    self.unlock(name)
                except SessionBusy:
                    pass
            n += 1
            name = f"{base}-{n}"

    new_name = claim_new

    # -- files ---------------------------------------------------------------------------------

    def save(self, record: ChatRecord) -> Path:
        """Save `record` atomically; returns its path.

        Raises `SessionChanged` (writing nothing) when the file is no longer the one this store
        loaded or last saved: another program wrote turns that this record does not have.
        """
        path = self.path(record.name)
        private_folder(self.folder, 2)
        try:
            now: Stamp = _stamp(path.stat())
        except FileNotFoundError:
            now = None
        if now != self._stamps.get(record.name):
            raise SessionChanged(record.name)
        st = write_atomic(path, record_to_json(record))
        self._stamps[record.name] = _stamp(st)
        return path

    def load(self, name: str) -> ChatRecord:
        """The saved conversation `name`, or `UsageError` if there is none or it is unreadable."""
        path = self.path(name)
        try:
            text, st = _read_text(path)
            record = parse_session(text)
        except FileNotFoundError:
            raise UsageError(f"no saved chat named {name!r}", hint=f"saved chats are in {self.folder}") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the saved chat ({exc.strerror or exc})") from None
        except BadRecord as exc:
            raise UsageError(f"{path}: {exc}", hint=_BROKEN_HINT) from None
        record.name = name  # the file is what was asked for, whatever name it claims inside
        self._stamps[name] = _stamp(st)
        return record

    def open_latest(self, warn: Callable[[str], None]) -> ChatRecord:
        """The newest saved conversation that can be read, locked; damaged ones are skipped, said so.

        A damaged newest file is left as it is (never overwritten) and named in a warning. With
        nothing readable at all it is a `UsageError`; a newest chat open in another process is
        `SessionBusy` rather than a silent switch to an older one.
        """
        names = self.saved()
        if not names:
            raise UsageError("no saved chat to continue", hint="start one with kimi chat")
        skipped = []
        for name in names:
            self.lock(name)
            try:
                record = self.load(name)
            except UsageError as exc:
                self.unlock(name)
                skipped.append(exc.message)
                continue
            for problem in skipped:
                warn(f"{problem}; skipped it, continuing chat {name!r}")
            return record
        raise UsageError(f"no saved chat to continue: none of the {len(names)} in {self.folder} can be read "
                         f"({skipped[0]})", hint="start a new one with kimi chat")

    def exists(self, name: str) -> bool:
        """Whether a conversation of that name was saved."""
        return self.path(name).is_file()

    def saved(self) -> list[str]:
        """The names of the saved conversations, most recently saved first."""
        try:
            files = [(p.stat().st_mtime_ns, p.name, p.stem) for p in self.folder.glob("*.json")
                     if p.is_file() and _NAME.match(p.stem)]
        except OSError:
            return []
        return [stem for _, _, stem in sorted(files, reverse=True)]

    def latest(self) -> str | None:
        """The name of the conversation saved most recently, if any."""
        names = self.saved()
        return names[0] if names else None
