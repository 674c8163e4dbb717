"""`--format json` (one object at the end) and `--format jsonl` (one event per line)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from fakes import CTRL_C, ScriptedEngine, Step, make_env, reply_events

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, Notice, ThinkingDelta, Timings, Usage
from kimi_cli.render.base import Outcome, RenderMeta, ThinkingMode, render_stream
from kimi_cli.render.env import Environment
from kimi_cli.render.jsonl import JsonLinesRenderer, JsonRenderer

META = RenderMeta(model="moonshotai/Kimi-VL-A3B-Thinking-2506", files=("cat.jpg",), prompt="What is this?")
DONE = dict(usage=Usage(prompt_tokens=1300, image_tokens=1024, generated_tokens=12, thinking_tokens=5),
            timings=Timings(first_token_s=0.5, total_s=2.0), tokens_per_s=6.0)


def run(cls: type, steps: Sequence[Step], thinking: ThinkingMode = "collapse") -> tuple[Environment, Outcome]:
    env = make_env()
    engine = ScriptedEngine(steps)
    outcome = render_stream(cls(env, thinking), META, engine.stream(None), engine.cancel)
    return env, outcome


def parse_json(env: Environment) -> dict[str, Any]:
    return json.loads(env.stdout.getvalue())  # type: ignore[attr-defined]


def parse_lines(env: Environment) -> list[dict[str, Any]]:
    return [json.loads(line) for line in env.stdout.getvalue().splitlines()]  # type: ignore[attr-defined]


def test_json_object() -> None:
    env, outcome = run(JsonRenderer, reply_events("Looks like a cat.", "A cat.", chunk=4, **DONE))
    assert parse_json(env) == {
        "model": META.model,
        "backend": "local",
        "files": ["cat.jpg"],
        "prompt": "What is this?",
        "thinking": "Looks like a cat.",
        "answer": "A cat.",
        "stop_reason": "end_turn",
        "usage": {"prompt_tokens": 1300, "image_tokens": 1024, "generated_tokens": 12, "thinking_tokens": 5,
                  "reused_prompt_tokens": 0},
        "timings": {"load_s": None, "preprocess_s": None, "first_token_s": 0.5, "thinking_s": None, "total_s": 2.0,
                    "tokens_per_s": 6.0},
        "thinking_truncated": False,
    }
    assert env.stderr.getvalue() == ""  # type: ignore[attr-defined]
    assert outcome.exit_code == 0


def test_json_hide_thinking_gives_null() -> None:
    env, _ = run(JsonRenderer, reply_events("Hmm.", "A cat."), "hide")
    assert parse_json(env)["thinking"] is None


def test_json_after_ctrl_c_keeps_the_partial_answer() -> None:
    env, outcome = run(JsonRenderer, [*reply_events("Hmm.", "A ca", finish=False), CTRL_C, AnswerDelta("t")])
    doc = parse_json(env)
    assert (doc["answer"], doc["stop_reason"]) == ("A ca", "cancelled")
    assert outcome.exit_code == 130


def test_json_after_an_error() -> None:
    env, outcome = run(JsonRenderer, [ThinkingDelta("Hmm."), ErrorEvent("out of memory", hint="smaller image")])
    doc = parse_json(env)
    assert doc["stop_reason"] == "error"
    assert doc["error"] == {"message": "out of memory", "hint": "smaller image", "exit_code": 1}
    assert env.stderr.getvalue() == "kimi: error: out of memory\nhint: smaller image\n"  # type: ignore[attr-defined]
    assert outcome.exit_code == 1


def test_json_warnings_go_to_stderr_and_progress_only_to_a_terminal() -> None:
    env, _ = run(JsonRenderer, [Notice("loading"), Notice("image downscaled", "warning"), *reply_events("a", "b")])
    assert env.stderr.getvalue() == "kimi: warning: image downscaled\n"  # type: ignore[attr-defined]
    assert parse_json(env)["answer"] == "b"


def test_json_close_without_final_event_prints_once() -> None:
    env = make_env()
    renderer = JsonRenderer(env)
    renderer.start(META)
    renderer.handle(AnswerDelta("partial"))
    renderer.close()
    renderer.close()
    doc = parse_json(env)
    assert (doc["answer"], doc["stop_reason"]) == ("partial", "error")


def test_jsonl_lines_in_order() -> None:
    env, _ = run(JsonLinesRenderer, [Notice("loading", "warning"), *reply_events("Hmm.", "A cat.", chunk=3, **DONE)])
    records = parse_lines(env)
    assert [r["type"] for r in records] == ["start", "notice", "thinking", "thinking", "answer", "answer", "finished"]
    assert records[0] == {"type": "start", "model": META.model, "backend": "local", "files": ["cat.jpg"],
                          "prompt": "What is this?"}
    assert records[1] == {"type": "notice", "level": "warning", "text": "loading"}
    assert "".join(r["text"] for r in records if r["type"] == "thinking") == "Hmm."
    assert "".join(r["text"] for r in records if r["type"] == "answer") == "A cat."
    assert records[-1]["stop_reason"] == "end_turn" and records[-1]["usage"]["generated_tokens"] == 12
    assert records[-1]["timings"]["tokens_per_s"] == 6.0


def test_jsonl_hide_and_empty_deltas() -> None:
    env, _ = run(JsonLinesRenderer, [ThinkingDelta("", 3), *reply_events("Hmm.", "Yes.")], "hide")
    assert [r["type"] for r in parse_lines(env)] == ["start", "answer", "finished"]


@pytest.mark.parametrize(
    ("steps", "last"),
    [
        ([*reply_events("a", "b", finish=False), CTRL_C], {"type": "finished", "stop_reason": "cancelled"}),
        ([ErrorEvent("boom", exit_code=4)], {"type": "error", "message": "boom", "hint": None, "exit_code": 4}),
    ],
)
def test_jsonl_last_line(steps: list[Step], last: dict[str, Any]) -> None:
    env, _ = run(JsonLinesRenderer, steps)
    record = parse_lines(env)[-1]
    assert {k: record[k] for k in last} == last


def test_jsonl_unicode_is_kept_readable() -> None:
    env, _ = run(JsonLinesRenderer, [AnswerDelta("猫です"), Finished("end_turn")])
    assert '"猫です"' in env.stdout.getvalue()  # type: ignore[attr-defined]
