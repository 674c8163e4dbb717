"""The plain renderer: answer alone on stdout, thinking and notes on stderr, quiet broken pipes."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Sequence

import pytest
from fakes import CTRL_C, ScriptedEngine, Step, assert_golden, make_env, reply_events

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Notice, Usage
from kimi_cli.render.base import Outcome, RenderMeta, ThinkingMode, render_stream
from kimi_cli.render.env import Environment
from kimi_cli.render.plain import PlainRenderer

THINKING = "The user asks what is in the picture.\nIt looks like a cat on a mat."
ANSWER = "A tabby cat lying on a woven mat.\n\n- pointed ears\n- long whiskers"


def render(steps: Sequence[Step], thinking: ThinkingMode = "collapse", **env_args: bool) -> tuple[Environment, Outcome]:
    env = make_env(**env_args)
    engine = ScriptedEngine(steps)
    outcome = render_stream(PlainRenderer(env, thinking), RenderMeta(), engine.stream(None), engine.cancel)
    return env, outcome


def transcript(env: Environment) -> str:
    return f"--- stdout ---\n{env.stdout.getvalue()}--- stderr ---\n{env.stderr.getvalue()}"  # type: ignore[attr-defined]


SCENARIOS = {
    # name: (steps, thinking mode, environment)
    "terminal": (reply_events(THINKING, ANSWER), "collapse", dict(tty=True)),
    "pipe": (reply_events(THINKING, ANSWER), "collapse", dict(tty=False)),
    "pipe_show": (reply_events(THINKING, ANSWER), "show", dict(tty=False)),
    "terminal_hide": (reply_events(THINKING, ANSWER), "hide", dict(tty=True)),
    "cut_off_thinking": (reply_events(THINKING, "", stop_reason="max_tokens"), "show", dict(tty=False)),
    "ctrl_c": ([*reply_events(THINKING, "A tabby cat ly", finish=False), CTRL_C, AnswerDelta("ing")], "collapse",
               dict(tty=True)),
    "error": ([*reply_events(THINKING, "A tabby", finish=False), ErrorEvent("out of memory", hint="smaller image")],
              "collapse", dict(tty=True)),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_golden(name: str) -> None:
    steps, mode, env_args = SCENARIOS[name]
    env, _ = render(steps, mode, **env_args)
    assert_golden(f"plain_{name}.txt", transcript(env))


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("no_color", [True, False])
def test_stdout_never_gets_escape_codes(name: str, no_color: bool) -> None:
    steps, mode, env_args = SCENARIOS[name]
    env, _ = render(steps, mode, **{**env_args, "no_color": no_color})
    assert "\x1b" not in env.stdout.getvalue()  # type: ignore[attr-defined]


def test_stdout_is_exactly_the_answer() -> None:
    env, outcome = render(reply_events(THINKING, ANSWER, chunk=3), "show", tty=False)
    assert env.stdout.getvalue() == ANSWER + "\n"  # type: ignore[attr-defined]
    assert env.stderr.getvalue() == THINKING + "\n\n"  # type: ignore[attr-defined]
    assert outcome.exit_code == 0


def test_thinking_is_dim_only_on_a_colour_terminal() -> None:
    env, _ = render(reply_events("Hmm.", "Yes."), tty=True, no_color=False)
    assert env.stderr.getvalue() == "\x1b[2mHmm.\x1b[22m\n\n"  # type: ignore[attr-defined]
    env, _ = render(reply_events("Hmm.", "Yes."), tty=True, no_color=True)
    assert env.stderr.getvalue() == "Hmm.\n\n"  # type: ignore[attr-defined]


def test_notice_never_glues_onto_thinking() -> None:
    steps = reply_events("Hmm", "Yes.")
    env, _ = render([steps[0], Notice("slow", "warning"), *steps[1:]], tty=True)
    assert env.stderr.getvalue() == "Hmm\nkimi: warning: slow\n"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("tty", "expected"), [(True, "kimi: loading\nkimi: warning: slow\n"),
                                               (False, "kimi: warning: slow\n")])
def test_progress_notices_only_on_a_terminal(tty: bool, expected: str) -> None:
    env, _ = render([Notice("loading"), Notice("slow", "warning"), *reply_events("", "Yes.")], tty=tty)
    assert env.stderr.getvalue() == expected  # type: ignore[attr-defined]


def test_ctrl_c_exit_code() -> None:
    _, outcome = render(SCENARIOS["ctrl_c"][0], tty=True)
    assert outcome.interrupted and outcome.exit_code == 130
    assert outcome.finished is not None and outcome.finished.stop_reason == "cancelled"


class _ClosedPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError


def test_broken_pipe_stops_writing_and_cancels() -> None:
    env = Environment(stdout=_ClosedPipe(), stderr=io.StringIO())
    engine = ScriptedEngine(reply_events("Hmm.", "A long answer", usage=Usage(generated_tokens=5)))
    outcome = render_stream(PlainRenderer(env), RenderMeta(), engine.stream(None), engine.cancel)
    assert outcome.output_closed and outcome.exit_code == 0
    assert engine.cancelled and env.stderr.getvalue() == ""  # type: ignore[attr-defined]


PIPE_SCRIPT = """
import sys
from kimi_cli.events.types import AnswerDelta, Finished
from kimi_cli.render.base import RenderMeta, render_stream
from kimi_cli.render.env import Environment
from kimi_cli.render.plain import PlainRenderer

events = [AnswerDelta("word " * 1000) for _ in range(200)] + [Finished("end_turn")]
outcome = render_stream(PlainRenderer(Environment.from_system()), RenderMeta(), events, lambda: None)
sys.exit(outcome.exit_code)
"""


def test_real_broken_pipe_leaves_stderr_empty() -> None:
    """Like `... | head -c 10`: read a little, close the pipe; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-c", PIPE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"word word "
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0
    assert err == b""
