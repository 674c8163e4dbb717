"""Saved conversations: one JSON file per chat in `$XDG_DATA_HOME/kimi/sessions/NAME.json`.

The REPL writes the file after every turn, atomically (a temporary file in the same folder, then
`os.replace`), so a crash or `kill -9` leaves either the previous or the new version, never half a
file, and `kimi chat --continue` picks up where it stopped. Attachments are stored as absolute paths
(with any `:1-3` page selection) and read again on resume; images are never copied into the file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.events.types import Finished, Timings, Usage

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class TurnRecord:
    """One exchange: what the user sent (text and files) and what came back, thinking included."""

    prompt: str
    attachments: tuple[str, ...] = ()
    answer: str = ""
    thinking: str = ""
    stop_reason: str = "end_turn"
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    tokens_per_s: float | None = None
    at: str = ""

    @classmethod
    def from_finished(cls, prompt: str, attachments: tuple[str, ...], answer: str, thinking: str,
                      finished: Finished | None) -> TurnRecord:
        """A record of a turn the engine finished (or that was cut off without a final event)."""
        done = finished or Finished(stop_reason="cancelled")
        return cls(prompt, attachments, answer, thinking, done.stop_reason, done.usage, done.timings,
                   done.tokens_per_s, time.strftime("%Y-%m-%dT%H:%M:%S"))


@dataclass
class ChatRecord:
    """A whole conversation as saved: its name, model, system prompt, settings and turns."""

    name: str
    model: str = ""
    system: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    turns: list[TurnRecord] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))


def record_to_dict(record: ChatRecord) -> dict[str, Any]:
    """The JSON form of a conversation (also what `/save chat.json` writes)."""
    return {"version": FORMAT_VERSION, **asdict(record)}


def record_from_dict(data: dict[str, Any]) -> ChatRecord:
    """Read a conversation back; unknown keys are ignored so newer files still load."""
    turns = []
    for t in data.get("turns", []):
        turns.append(TurnRecord(
            prompt=str(t.get("prompt", "")), attachments=tuple(t.get("attachments", ())),
            answer=str(t.get("answer", "")), thinking=str(t.get("thinking", "")),
            stop_reason=str(t.get("stop_reason", "end_turn")),
            usage=_known(Usage, t.get("usage")), timings=_known(Timings, t.get("timings")),
            tokens_per_s=t.get("tokens_per_s"), at=str(t.get("at", ""))))
    return ChatRecord(name=str(data["name"]), model=str(data.get("model", "")), system=data.get("system"),
                      settings=dict(data.get("settings") or {}), turns=turns,
                      created=str(data.get("created", "")))


def _known(cls: type, values: Any) -> Any:
    names = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers (and a crash) see the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_name(name: str) -> str:
    """A session name is a plain file name: letters, digits, `.`, `_`, `-`."""
    if not _NAME.match(name):
        raise UsageError(f"--session {name!r}: not a valid name",
                         hint="use letters, digits, '.', '_' and '-' (at most 100)")
    return name


class SessionStore:
    """The folder of saved conversations."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, name: str) -> Path:
        """Where the conversation `name` is saved."""
        return self.folder / f"{check_name(name)}.json"

    def save(self, record: ChatRecord) -> Path:
        """Save `record` atomically; returns its path."""
        path = self.path(record.name)
        write_atomic(path, json.dumps(record_to_dict(record), ensure_ascii=False, indent=1) + "\n")
        return path

    def load(self, name: str) -> ChatRecord:
        """The saved conversation `name`, or `UsageError` if there is none (or it is unreadable)."""
        path = self.path(name)
        try:
            return record_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UsageError(f"no saved chat named {name!r}", hint=f"saved chats are in {self.folder}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: cannot read the saved chat ({exc})", hint="start a new one") from None

    def exists(self, name: str) -> bool:
        """Whether a conversation of that name was saved."""
        return self.path(name).is_file()

    def latest(self) -> str | None:
        """The name of the conversation saved most recently, if any."""
        try:
            files = [p for p in self.folder.glob("*.json") if p.is_file()]
        except OSError:
            return None
        if not files:
            return None
        return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)).stem

    def new_name(self) -> str:
        """A fresh name from the current time, made unique within the folder."""
        base = time.strftime("%Y%m%d-%H%M%S")
        name, n = base, 1
        while self.exists(name):
            n += 1
            name = f"{base}-{n}"
        return name
