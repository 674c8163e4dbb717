"""What a saved conversation holds, and the checked reader of its JSON form.

A session file is untrusted input: it may be hand-edited, truncated, or written by another
program. `record_from_dict` checks every field it uses (type, range, required keys) and raises
`BadRecord` naming the first wrong field (`turn 2: tokens_per_s must be a number, not "fast"`), so
that nothing downstream (`/stats`, the resume summary, the prompt) meets a value of the wrong type.
Unknown keys are ignored, so files written by a newer version still load.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kimi_cli.events.types import Finished, Timings, Usage

FORMAT_VERSION = 1


class BadRecord(ValueError):
    """A session's JSON has the wrong shape; the message names the field."""


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


def record_to_json(record: ChatRecord) -> str:
    """The text of a session file: readable UTF-8, or all-ASCII escapes when a string cannot be UTF-8.

    A file name that is not valid UTF-8 (`os.fsdecode` turns its bytes into lone surrogates) must
    survive the round trip exactly, or the file could not be opened again on resume.
    """
    data = record_to_dict(record)
    text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=1) + "\n"
    return text


_MISSING = object()


def _show(value: Any) -> str:
    """A value from the file as it would be written in JSON (control characters escaped), cut short."""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _get(obj: dict[str, Any], key: str, want: str, where: str, default: Any = _MISSING) -> Any:
    """`obj[key]` checked against `want` (str, str?, int, number?, list, object)."""
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise BadRecord(f"{where}{key} is missing")
        return default
    if value is None and want.endswith("?"):
        return None
    kind = want.rstrip("?")
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "number": isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value) and value >= 0,
        "list": isinstance(value, (list, tuple)),
        "object": isinstance(value, dict),
    }[kind]
    if not ok:
        wanted = {"str": "a string", "int": "a whole number of at least 0", "number": "a number of at least 0",
                  "list": "a list", "object": "an object"}[kind]
        shown = _show(value) if not isinstance(value, (dict, list, tuple)) else _kind(value)
        raise BadRecord(f"{where}{key} must be {wanted}{' or null' if want.endswith('?') else ''}, not {shown}")
    return value


def _part(cls: type, obj: dict[str, Any], key: str, want: str, where: str) -> Any:
    """A `Usage` or `Timings` from `obj[key]`: each known field checked, unknown ones ignored."""
    values = _get(obj, key, "object?", where, None) or {}
    return cls(**{f.name: _get(values, f.name, want, f"{where}{key}.", f.default) for f in fields(cls)})


def _turn(data: Any, n: int) -> TurnRecord:
    where = f"turn {n}: "
    if not isinstance(data, dict):
        raise BadRecord(f"turn {n} must be an object, not {_kind(data)}")
    attachments = _get(data, "attachments", "list", where, [])
    for i, spec in enumerate(attachments, 1):
        if not isinstance(spec, str):
            raise BadRecord(f"{where}attachment {i} must be a file path (a string), not {_show(spec)}")
    return TurnRecord(
        prompt=_get(data, "prompt", "str", where), attachments=tuple(attachments),
        answer=_get(data, "answer", "str", where), thinking=_get(data, "thinking", "str", where, ""),
        stop_reason=_get(data, "stop_reason", "str", where, "end_turn"),
        usage=_part(Usage, data, "usage", "int", where), timings=_part(Timings, data, "timings", "number?", where),
        tokens_per_s=_get(data, "tokens_per_s", "number?", where, None), at=_get(data, "at", "str", where, ""))


def record_from_dict(data: Any) -> ChatRecord:
    """Read a conversation back, checking every field; `BadRecord` names the first wrong one."""
    if not isinstance(data, dict):
        raise BadRecord(f"the file must hold a JSON object, not {_kind(data)}")
    _get(data, "version", "int", "", FORMAT_VERSION)
    turns = [_turn(t, n) for n, t in enumerate(_get(data, "turns", "list", ""), 1)]
    return ChatRecord(name=_get(data, "name", "str", ""), model=_get(data, "model", "str", "", ""),
                      system=_get(data, "system", "str?", "", None),
                      settings=dict(_get(data, "settings", "object?", "", None) or {}), turns=turns,
                      created=_get(data, "created", "str", "", ""))
