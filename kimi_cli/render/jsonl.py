"""Machine-readable output: `--format jsonl` (one typed event per line) and `--format json`.

JSON lines, flushed as they stream, in this order:

    {"type": "start", "model": ..., "backend": ..., "files": [...], "prompt": ...}
    {"type": "thinking", "text": ...}            (left out with --thinking hide)
    {"type": "answer", "text": ...}
    {"type": "notice", "level": "info"|"warning", "text": ...}
    {"type": "finished", "stop_reason": ..., "usage": {...}, "timings": {...}, "thinking_truncated": ...}
    {"type": "error", "message": ..., "hint": ..., "exit_code": ...}

`--format json` prints one object when the turn ends, also after Ctrl-C (`stop_reason`
"cancelled", partial answer) and after an error (`stop_reason` "error" plus an `error` object):

    {"model", "backend", "files", "prompt", "thinking", "answer", "stop_reason", "usage", "timings"}

`thinking` is null with `--thinking hide`; `timings` carries `tokens_per_s` too; `thinking_truncated`
is true when the engine closed the thinking (`--think-budget`). Warnings and the
error line also go to stderr as plain lines (info notices only when stderr is a terminal), so
stdout stays a single parseable object.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from kimi_cli.events.types import AnswerDelta, Event, Finished, Notice, ThinkingDelta
from kimi_cli.render.base import OutputClosed, RenderMeta, ThinkingMode, error_lines, notice_line, write
from kimi_cli.render.env import Environment
from kimi_cli.textsafe import json_safe


def _finished_fields(event: Finished) -> dict[str, Any]:
    return {"stop_reason": event.stop_reason, "usage": asdict(event.usage), "timings": event.timings_record(),
            "thinking_truncated": event.thinking_truncated}


def event_record(event: Event) -> dict[str, Any]:
    """The JSON-lines record of one event."""
    if isinstance(event, ThinkingDelta):
        return {"type": "thinking", "text": event.text}
    if isinstance(event, AnswerDelta):
        return {"type": "answer", "text": event.text}
    if isinstance(event, Notice):
        return {"type": "notice", "level": event.level, "text": event.text}
    if isinstance(event, Finished):
        return {"type": "finished", **_finished_fields(event)}
    return {"type": "error", "message": event.message, "hint": event.hint, "exit_code": event.exit_code}


class _JsonBase:
    """Shared plumbing: a flag that stops all writing once the reader went away."""

    def __init__(self, env: Environment, thinking: ThinkingMode = "collapse") -> None:
        self._env = env
        self._hide_thinking = thinking == "hide"
        self._closed = False

    def _write(self, text: str, err: bool = False) -> None:
        if self._closed:
            return
        try:
            write(self._env.stderr if err else self._env.stdout, text)
        except OutputClosed:
            self._closed = True
            raise

    def close(self) -> None:
        """Nothing is held back; later writes are dropped."""
        self._closed = True


class JsonLinesRenderer(_JsonBase):
    """One JSON object per event, one per line, as the events arrive."""

    def start(self, meta: RenderMeta) -> None:
        """Open with a `start` record naming the model, files and prompt."""
        self._line({"type": "start", "model": meta.model, "backend": meta.backend, "files": list(meta.files),
                    "prompt": meta.prompt})

    def handle(self, event: Event) -> None:
        """Write the event's record (empty deltas and hidden thinking are skipped)."""
        if isinstance(event, (ThinkingDelta, AnswerDelta)) and not event.text:
            return
        if isinstance(event, ThinkingDelta) and self._hide_thinking:
            return
        self._line(event_record(event))

    def _line(self, record: dict[str, Any]) -> None:
        self._write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")


class JsonRenderer(_JsonBase):
    """Collects the turn and prints one object at its end."""

    def __init__(self, env: Environment, thinking: ThinkingMode = "collapse") -> None:
        super().__init__(env, thinking)
        self._meta = RenderMeta()
        self._thinking: list[str] = []
        self._answer: list[str] = []
        self._printed = False

    def start(self, meta: RenderMeta) -> None:
        """Remember what the object will echo."""
        self._meta = meta

    def handle(self, event: Event) -> None:
        """Collect deltas; print the object on `Finished` or `ErrorEvent`."""
        if isinstance(event, ThinkingDelta):
            self._thinking.append(event.text)
        elif isinstance(event, AnswerDelta):
            self._answer.append(event.text)
        elif isinstance(event, Notice):
            if event.level == "warning" or self._env.stderr_isatty:
                self._write(notice_line(event) + "\n", err=True)
        elif isinstance(event, Finished):
            self._print(_finished_fields(event))
        else:
            self._write("".join(line + "\n" for line in error_lines(event)), err=True)
            error = {"message": event.message, "hint": event.hint, "exit_code": event.exit_code}
            self._print({"stop_reason": "error", "usage": None, "timings": None, "error": error})

    def close(self) -> None:
        """A turn that ended without a final event (a crash) still yields its object."""
        if not self._printed and not self._closed:
            self._print({"stop_reason": "error", "usage": None, "timings": None})
        super().close()

    def document(self, end: dict[str, Any]) -> dict[str, Any]:
        """The object for this turn, `end` holding stop_reason/usage/timings (and error)."""
        meta = self._meta
        return {
            "model": meta.model,
            "backend": meta.backend,
            "files": list(meta.files),
            "prompt": meta.prompt,
            "thinking": None if self._hide_thinking else "".join(self._thinking),
            "answer": "".join(self._answer),
            **end,
        }

    def _print(self, end: dict[str, Any]) -> None:
        if self._printed:
            return
        self._printed = True
        self._write(json.dumps(json_safe(self.document(end)), ensure_ascii=False, indent=2) + "\n")
