"""`render_stream` (Ctrl-C, missing final events, closed pipes), the factory and `Environment`."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import CTRL_C, ScriptedEngine, make_env, reply_events

from kimi_cli.errors import EXIT_INTERRUPTED
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Event, Finished, Usage
from kimi_cli.render import make_renderer, resolve_format
from kimi_cli.render.base import Outcome, OutputClosed, RenderMeta, render_stream
from kimi_cli.render.env import Environment
from kimi_cli.render.jsonl import JsonLinesRenderer, JsonRenderer
from kimi_cli.render.plain import PlainRenderer


class Recorder:
    """A renderer that remembers its calls."""

    def __init__(self, fail_on: type | None = None) -> None:
        self.calls: list[Any] = []
        self.fail_on = fail_on

    def start(self, meta: RenderMeta) -> None:
        self.calls.append("start")

    def handle(self, event: Event) -> None:
        self.calls.append(event)
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise OutputClosed

    def close(self) -> None:
        self.calls.append("close")


def test_events_flow_in_order_and_close_runs() -> None:
    recorder = Recorder()
    events = reply_events("a", "b")
    outcome = render_stream(recorder, RenderMeta(), events, lambda: None)
    assert recorder.calls == ["start", *events, "close"]
    assert outcome == Outcome(finished=events[-1])  # type: ignore[arg-type]


def test_ctrl_c_cancels_and_waits_for_the_engine() -> None:
    recorder = Recorder()
    engine = ScriptedEngine([AnswerDelta("x"), CTRL_C, AnswerDelta("never")])
    outcome = render_stream(recorder, RenderMeta(), engine.stream(None), engine.cancel)
    assert engine.cancelled
    assert recorder.calls[1:] == [AnswerDelta("x"), Finished("cancelled", Usage(generated_tokens=1)), "close"]
    assert outcome.interrupted and outcome.exit_code == EXIT_INTERRUPTED


def _dying_stream() -> Iterator[Event]:
    yield AnswerDelta("x")
    raise KeyboardInterrupt  # Ctrl-C inside the generator's own frame ends it


def test_ctrl_c_that_kills_the_stream_still_ends_cancelled() -> None:
    recorder = Recorder()
    cancels: list[int] = []
    outcome = render_stream(recorder, RenderMeta(), _dying_stream(), lambda: cancels.append(1))
    assert recorder.calls[-2:] == [Finished("cancelled"), "close"]
    assert cancels == [1] and outcome.exit_code == EXIT_INTERRUPTED


class _Stubborn:
    """An engine stream that ignores cancel: a second Ctrl-C must stop the wait."""

    def __init__(self) -> None:
        self.n = 0

    def __iter__(self) -> _Stubborn:
        return self

    def __next__(self) -> Event:
        self.n += 1
        if self.n in (2, 3):
            raise KeyboardInterrupt
        return AnswerDelta(str(self.n))


def test_second_ctrl_c_stops_waiting() -> None:
    recorder = Recorder()
    outcome = render_stream(recorder, RenderMeta(), _Stubborn(), lambda: None)
    assert recorder.calls[-3:] == [AnswerDelta("1"), Finished("cancelled"), "close"]
    assert outcome.exit_code == EXIT_INTERRUPTED


def test_a_stream_without_final_event_becomes_an_error() -> None:
    recorder = Recorder()
    outcome = render_stream(recorder, RenderMeta(), [AnswerDelta("x")], lambda: None)
    assert isinstance(recorder.calls[-2], ErrorEvent)
    assert outcome.exit_code == 1


def test_events_after_the_final_one_are_not_shown() -> None:
    recorder = Recorder()
    render_stream(recorder, RenderMeta(), [Finished("end_turn"), AnswerDelta("late")], lambda: None)
    assert AnswerDelta("late") not in recorder.calls


def test_closed_output_cancels_and_exits_quietly() -> None:
    recorder = Recorder(fail_on=AnswerDelta)
    cancels: list[int] = []
    outcome = render_stream(recorder, RenderMeta(), reply_events("a", "b"), lambda: cancels.append(1))
    assert outcome.output_closed and outcome.exit_code == 0 and cancels == [1]
    assert recorder.calls[-1] == "close"


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (Outcome(finished=Finished("end_turn")), 0),
        (Outcome(finished=Finished("max_tokens")), 0),
        (Outcome(finished=Finished("cancelled")), 130),
        (Outcome(finished=Finished("end_turn"), interrupted=True), 130),
        (Outcome(error=ErrorEvent("x", exit_code=4)), 4),
        (Outcome(output_closed=True, interrupted=True), 0),
    ],
)
def test_exit_codes(outcome: Outcome, code: int) -> None:
    assert outcome.exit_code == code


@pytest.mark.parametrize(
    ("fmt", "tty", "kind"),
    [("auto", True, "PanelsRenderer"), ("auto", False, PlainRenderer), ("plain", True, PlainRenderer),
     ("rich", False, "PanelsRenderer"), ("json", True, JsonRenderer), ("jsonl", False, JsonLinesRenderer)],
)
def test_factory(fmt: Any, tty: bool, kind: Any) -> None:
    renderer = make_renderer(fmt, "collapse", make_env(tty=tty))
    name = type(renderer).__name__
    assert name == kind if isinstance(kind, str) else isinstance(renderer, kind)


def test_resolve_format() -> None:
    assert resolve_format("auto", make_env(tty=True)) == "rich"
    assert resolve_format("auto", make_env(tty=False)) == "plain"
    assert resolve_format("json", make_env(tty=True)) == "json"


@pytest.mark.parametrize(
    ("environ", "no_color", "dumb"),
    [({}, False, False), ({"NO_COLOR": "1"}, True, False), ({"NO_COLOR": ""}, False, False),
     ({"TERM": "dumb"}, False, True)],
)
def test_environment_from_system(environ: dict[str, str], no_color: bool, dumb: bool) -> None:
    env = Environment.from_system(environ)
    assert (env.no_color, env.dumb_terminal) == (no_color, dumb)


@pytest.mark.parametrize(
    ("tty", "no_color", "dumb", "live", "styled"),
    [(True, False, False, True, True), (True, True, False, False, False), (True, False, True, False, False),
     (False, False, False, False, False)],
)
def test_environment_capabilities(tty: bool, no_color: bool, dumb: bool, live: bool, styled: bool) -> None:
    env = Environment(stdout_isatty=tty, stderr_isatty=tty, no_color=no_color, dumb_terminal=dumb)
    assert (env.stdout_live, env.stderr_styled) == (live, styled)


class _SignalledStream:
    """Sends itself a real SIGINT after the first event, then waits for cancel like an engine."""

    def __init__(self) -> None:
        self.cancelled = False
        self.step = 0

    def __iter__(self) -> _SignalledStream:
        return self

    def __next__(self) -> Event:
        self.step += 1
        if self.step == 1:
            return AnswerDelta("partial")
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
            return AnswerDelta(" more")
        if self.cancelled:
            if self.step > 100:
                raise StopIteration
            self.step = 100
            return Finished("cancelled", Usage(generated_tokens=2))
        return AnswerDelta(".")


def test_real_sigint_cancels_without_an_exception() -> None:
    recorder = Recorder()
    stream = _SignalledStream()
    previous = signal.getsignal(signal.SIGINT)
    outcome = render_stream(recorder, RenderMeta(), stream, lambda: setattr(stream, "cancelled", True))
    assert signal.getsignal(signal.SIGINT) is previous
    assert recorder.calls[-2] == Finished("cancelled", Usage(generated_tokens=2))
    assert outcome.interrupted and outcome.exit_code == EXIT_INTERRUPTED
