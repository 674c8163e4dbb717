"""The conversation at run time: sends turns through the engine and renderer, keeps and saves them.

`Chat` knows nothing about prompt_toolkit: it takes a line of text and does the turn, so tests drive
it directly or through the REPL. Each turn goes the same way as `kimi ask`: the files are planned
and loaded (`kimi_cli.app.media.load_media`), the user message is built, the engine streams and
`render_stream` shows it (Ctrl-C cancels). The events are tapped on the way to keep the answer,
the thinking and the usage; the conversation is saved after every turn.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.errors import KimiError, UsageError, debug_enabled
from kimi_cli.events.types import AnswerDelta, Event, Finished, Notice, ThinkingDelta
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import MediaItem
from kimi_cli.render.env import Environment
from kimi_cli.repl.paths import extract_mentions, resolve_spec
from kimi_cli.repl.store import ChatRecord, SessionChanged, SessionStore, TurnRecord


class Media(Protocol):
    """Reads attachments: checks them when attached, loads them when a message is sent."""

    def check(self, specs: list[str]) -> tuple[str, ...]:
        """Raise `MediaError`/`UsageError` for a file that cannot be used; returns notes."""
        ...

    def load(self, specs: list[str], prompt: str) -> tuple[list[MediaItem], tuple[str, ...]]:
        """The loaded items (in order) and notes for stderr."""
        ...


@dataclass(frozen=True)
class PlannedMedia:
    """`Media` through the same planner and loader as `kimi ask`."""

    options: MediaOptions
    model: str | None

    def check(self, specs: list[str]) -> tuple[str, ...]:
        """Plan the files (opens and sniffs them, renders nothing)."""
        from kimi_cli.app.media import plan_inputs

        return plan_inputs(specs, self.options, self.model).notes if specs else ()

    def load(self, specs: list[str], prompt: str) -> tuple[list[MediaItem], tuple[str, ...]]:
        """Plan and load the files for one message."""
        from kimi_cli.app.media import load_media

        return load_media(specs, self.options, self.model, prompt)


class Say:
    """REPL messages: information on stdout, notes and errors as `kimi: ...` lines on stderr."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def info(self, text: str) -> None:
        """Output the user asked for (help, stats, transcripts)."""
        self._write(self.env.stdout, text + "\n")

    def note(self, text: str, level: str = "") -> None:
        """A side remark (`level` "warning" marks it as one)."""
        self._write(self.env.stderr, f"kimi: {level + ': ' if level else ''}{text}\n")

    def error(self, exc: KimiError) -> None:
        """A failed command or turn: one line and a hint, as the CLI prints them."""
        self._write(self.env.stderr, f"kimi: error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))

    def raw(self, text: str) -> None:
        """Text for stderr as it is (a traceback with --debug)."""
        self._write(self.env.stderr, text)

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            try:
                stream.write(text)
            except UnicodeEncodeError:  # a file name that is not UTF-8: show it, marked, not nothing
                stream.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # a closed terminal must not take the conversation down with it


class Tap:
    """Passes events through to the renderer and keeps the answer, thinking and final event.

    An iterator object rather than a generator: a Ctrl-C raised while it waits must leave it
    usable, so that `render_stream` can go on reading the engine's `Finished("cancelled")`.
    """

    def __init__(self, notes: tuple[str, ...], events: Iterator[Event]) -> None:
        self.queue: list[Event] = [Notice(n, "warning") for n in notes]
        self.events = events
        self.answer: list[str] = []
        self.thinking: list[str] = []
        self.finished: Finished | None = None

    def __iter__(self) -> Tap:
        return self

    def __next__(self) -> Event:
        if self.queue:
            return self.queue.pop(0)
        event = next(self.events)
        if isinstance(event, AnswerDelta):
            self.answer.append(event.text)
        elif isinstance(event, ThinkingDelta):
            self.thinking.append(event.text)
        elif isinstance(event, Finished):
            self.finished = event
        return event


class Chat:
    """One conversation: its record (saved after each turn), the engine and the files waiting to go."""

    def __init__(self, engine: Any, record: ChatRecord, store: SessionStore, media: Media,
                 env: Environment | None = None, fmt: str = "auto", seed: int | None = None,
                 messages: list[Message] | None = None) -> None:
        self.engine = engine
        self.record = record
        self.store = store
        self.media = media
        self.env = env or Environment.from_system()
        self.fmt = fmt
        self.seed = seed
        #: The user message of each turn in `record.turns`, images loaded (same length).
        self.messages: list[Message] = list(messages or [])
        self.pending: list[str] = []
        self.say = Say(self.env)

    def history(self) -> list[Message]:
        """The conversation as the model sees it: user turns with their images, answers only."""
        out: list[Message] = []
        for message, turn in zip(self.messages, self.record.turns, strict=True):
            out += [message, Message.text("assistant", turn.answer)]
        return out

    def generation(self) -> GenerationSettings:
        """Sampling settings now in force (`/set` changes them)."""
        s = self.record.settings
        return GenerationSettings(max_new_tokens=int(s["max_new_tokens"]), temperature=float(s["temperature"]),
                                  top_p=float(s["top_p"]), seed=self.seed, think_budget=_budget(s.get("think_budget")))

    def attach(self, specs: list[str]) -> list[str]:
        """Check files and keep them for the next message; returns them as saved (absolute)."""
        resolved = [resolve_spec(s) for s in specs]
        for note in self.media.check(resolved):
            self.say.note(note, "warning")
        self.pending += [s for s in resolved if s not in self.pending]
        return resolved

    def send(self, text: str) -> TurnRecord | None:
        """One turn: the message with pending and `@` files; returns its record (None if it failed)."""
        mentioned, prompt = extract_mentions(text)
        specs = list(dict.fromkeys([*self.pending, *(resolve_spec(m) for m in mentioned)]))
        try:
            items, notes = self.media.load(specs, prompt)
        except KimiError:
            if self.pending:
                self.say.note("nothing was sent; the attached files were dropped (/attach the good ones again)")
                self.pending = []
            raise
        from kimi_cli.app.media import build_user_message

        self.pending = []
        return self._turn(build_user_message(items, prompt), prompt, tuple(specs), notes)

    def retry(self) -> TurnRecord | None:
        """Generate the last answer again from the same message and files."""
        if not self.record.turns:
            raise UsageError("/retry: nothing to retry yet", hint="send a message first")
        last, message = self.record.turns.pop(), self.messages.pop()
        turn = None
        try:
            turn = self._turn(message, last.prompt, last.attachments, ())
        finally:
            if turn is None:  # failed or interrupted: keep the old answer rather than lose the turn
                self.record.turns.append(last)
                self.messages.append(message)
        return turn

    def clear(self) -> str:
        """Start a new conversation (the old one stays saved); returns the old name."""
        old = self.record.name
        self.engine.reset()
        self.record = ChatRecord(name=self.store.claim_new(), model=self.record.model,
                                 system=self.record.system, settings=dict(self.record.settings))
        self.store.unlock(old)
        self.messages, self.pending = [], []
        return old

    def _turn(self, message: Message, prompt: str, specs: tuple[str, ...],
              notes: tuple[str, ...]) -> TurnRecord | None:
        from kimi_cli.app.turn import render_turn
        from kimi_cli.render import make_renderer
        from kimi_cli.render.base import RenderMeta

        request = Request(messages=(*self.history(), message), settings=self.generation(),
                          system_prompt=self.record.system)
        renderer = make_renderer(self.fmt, self.record.settings["thinking"], self.env)  # type: ignore[arg-type]
        meta = RenderMeta(model=self.record.model, files=specs, prompt=prompt,
                          backend=getattr(self.engine, "backend", "local"))
        taps: list[Tap] = []

        def tap_events(notes: tuple[str, ...], events: Iterator[Event]) -> Tap:
            taps.append(Tap(notes, events))
            return taps[0]

        # The stream is closed at the end (after a second Ctrl-C too), which stops and joins the
        # generation thread before the next turn can start one.
        outcome = render_turn(self.engine, request, renderer, meta, tap_events, notes)
        tap = taps[0]
        if outcome.error is not None:
            if outcome.error.detail and debug_enabled(sys.argv):
                self.say.raw(outcome.error.detail)
            self.say.note("that message was not kept in the conversation")
            return None
        turn = TurnRecord.from_finished(prompt, specs, "".join(tap.answer), "".join(tap.thinking),
                                        outcome.finished or tap.finished)
        self.record.turns.append(turn)
        self.messages.append(message)
        self.save()
        return turn

    def save(self) -> None:
        """Write the conversation to its session file (a failure is reported, never fatal)."""
        if not self.record.turns:
            return
        try:
            try:
                self.store.save(self.record)
            except SessionChanged:
                self._fork()
        except (OSError, KimiError) as exc:
            self.say.note(f"could not save the conversation: {exc}", "warning")

    def _fork(self) -> None:
        """Another program rewrote our session file: keep both, saving ours under a new name."""
        old = self.record.name
        self.record.name = self.store.claim_new(old)
        self.store.unlock(old)
        self.store.save(self.record)
        self.say.note(f"chat {old!r} was changed by another program since it was opened; this conversation "
                      f"is now saved as {self.record.name!r} (kimi chat --session {self.record.name})", "warning")

    def prompt_text(self) -> str:
        """The prompt, showing how many files wait for the next message."""
        return f"[{len(self.pending)} attached] › " if self.pending else "› "


def restore_messages(record: ChatRecord, media: Media, say: Say) -> list[Message]:
    """User messages of a saved conversation, files read again; a vanished file is left out, said so."""
    from kimi_cli.app.media import build_user_message
    from kimi_cli.repl.paths import spec_is_file

    messages = []
    for n, turn in enumerate(record.turns, 1):
        present = [s for s in turn.attachments if spec_is_file(s)]
        for gone in (s for s in turn.attachments if s not in present):
            say.note(f"turn {n}: {gone} is gone; the turn goes on without it", "warning")
        try:
            items, _ = media.load(present, turn.prompt)
        except KimiError as exc:
            say.note(f"turn {n}: cannot read its files again ({exc.message}); going on without them", "warning")
            items = []
        messages.append(build_user_message(items, turn.prompt))
    return messages


def _budget(value: object) -> int | None:
    """The saved thinking budget (`/set think_budget`), None when unset (or from an older session)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None

