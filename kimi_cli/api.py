"""The public Python API: `Assistant` asks the model about files and returns (or streams) the reply.

    from kimi_cli import Assistant

    kimi = Assistant(model="moonshotai/Kimi-VL-A3B-Thinking-2506", temperature=0)
    reply = kimi.ask(["photo.jpg"], "What is in it?")
    print(reply.answer)            # also .thinking, .usage, .timings, .stop_reason
    for event in kimi.stream(["report.pdf:1-3"], "Summarise"):
        ...                        # ThinkingDelta, AnswerDelta, Notice, then Finished

It is a client of the same application layer as `kimi ask`: settings are checked by the same
declarations (a bad value is a `UsageError`), inputs are planned and checked before the model
loads, and the engine is made once, on the first question, from the `backend` setting.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_cli.errors import GenerationError, UsageError
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Event, Finished, ThinkingDelta, Timings, Usage

Files = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Reply:
    """One answer: the thinking and the answer apart, token counts, timings and why it stopped."""

    answer: str
    thinking: str
    usage: Usage
    timings: Timings
    stop_reason: str
    tokens_per_s: float | None = None
    notes: tuple[str, ...] = ()
    #: The engine closed the thinking (`think_budget` ran out, or 0 skipped it).
    thinking_truncated: bool = False


class Assistant:
    """The model behind a few methods. Settings are those of `kimi ask` (see `kimi_cli.settings`).

    `media` takes `kimi_cli.media.options.MediaOptions` fields (`pages`, `fps`, `max_frames`,
    `time_range`, `max_pages`). With `use_environment=True` the config file and `KIMI_*` variables
    apply too (keyword arguments win), as on the command line.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, system: str | None = None,
                 use_environment: bool = False, media: dict[str, Any] | None = None, **settings: Any) -> None:
        from kimi_cli.config import load_settings, resolve

        given = {"model": os.fspath(model) if model is not None else None, **settings}
        unknown = sorted(set(given) - _names())
        if unknown:
            raise TypeError(f"Assistant() got unknown settings: {', '.join(unknown)}")
        if use_environment:
            self.settings = load_settings(given)
        else:
            self.settings = resolve((given, lambda s, key, value: f"Assistant({key}={value!r})"))
        self.system = system
        self.media = dict(media or {})
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        """The engine, made on first use from the `backend` setting (loads the model locally)."""
        if self._engine is None:
            from kimi_cli.app.engines import make_engine, preflight

            preflight(self.settings)
            self._engine = make_engine(self.settings)
        return self._engine

    def stream(self, files: Files = (), prompt: str | None = None, **settings: Any) -> Iterator[Event]:
        """Events for one question about `files` (paths, `report.pdf:1-3`, ...); `settings` override."""
        message, current, notes = self._prepare(files, prompt, settings)
        from kimi_cli.app.turn import make_request, stream_events

        yield from stream_events(self.engine, make_request((message,), current, self.system), notes)

    def ask(self, files: Files = (), prompt: str | None = None, **settings: Any) -> Reply:
        """The whole reply to one question; a failed generation raises `GenerationError`."""
        answer: list[str] = []
        thinking: list[str] = []
        notes: list[str] = []
        for event in self.stream(files, prompt, **settings):
            if isinstance(event, AnswerDelta):
                answer.append(event.text)
            elif isinstance(event, ThinkingDelta):
                thinking.append(event.text)
            elif isinstance(event, ErrorEvent):
                raise GenerationError(event.message, event.hint)
            elif isinstance(event, Finished):
                return Reply("".join(answer), "".join(thinking), event.usage, event.timings, event.stop_reason,
                             event.tokens_per_s, tuple(notes), event.thinking_truncated)
            else:
                notes.append(event.text)
        raise GenerationError("the engine stopped without finishing the reply")

    def cancel(self) -> None:
        """Ask a running `stream` (on another thread) to stop soon."""
        if self._engine is not None:
            self._engine.cancel()

    def close(self) -> None:
        """Free the engine (the model's memory, its thread)."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> Assistant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self, files: Files, prompt: str | None, overrides: dict[str, Any]) -> tuple[Any, Any, tuple[str, ...]]:
        from kimi_cli.app import media as app_media
        from kimi_cli.app.preflight import check_settings, context_length, fit_budget

        specs, text = _split(files, prompt)
        unknown = sorted(set(overrides) - _names())
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        current = self.settings.with_values("ask()", **overrides) if overrides else self.settings
        check_settings(current)
        opts = app_media.media_options(current, **self.media)
        plan = app_media.plan_inputs(specs, opts, current.model, text)
        current, budget_note = fit_budget(current, plan.total_tokens, context_length(current.model))
        items, notes = app_media.load_planned(plan) if specs else ([], ())
        return app_media.build_user_message(items, text), current, (*notes, *([budget_note] if budget_note else []))


def _names() -> set[str]:
    from kimi_cli.settings import BY_NAME

    return set(BY_NAME)


def _split(files: Files, prompt: str | None) -> tuple[list[str], str]:
    """`ask("Hello")` is a prompt without files; `ask("a.png", "What?")` one file."""
    if prompt is None:
        if isinstance(files, (str, os.PathLike)) and not Path(files).exists():
            return [], os.fspath(files)
        raise UsageError("no prompt given", hint='ask(["photo.jpg"], "What is in it?")')
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)], prompt
    return [os.fspath(f) for f in files], prompt
