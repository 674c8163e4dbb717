"""The public Python API on the tiny checkpoint: `Assistant.ask` and `Assistant.stream`."""

from __future__ import annotations

import pytest
from PIL import Image

from kimi_cli import Assistant, Reply
from kimi_cli.errors import UsageError
from kimi_cli.events.types import AnswerDelta, Finished


@pytest.fixture(scope="module")
def kimi(tiny_checkpoint):
    with Assistant(model=tiny_checkpoint, device="cpu", temperature=0, max_new_tokens=6) as assistant:
        yield assistant


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "red").save(path)
    return str(path)


def test_ask_returns_the_whole_reply(kimi, photo):
    reply = kimi.ask([photo], "What is in it?")
    assert isinstance(reply, Reply)
    assert reply.answer.strip() or reply.thinking.strip()
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= reply.usage.generated_tokens <= 6 and reply.usage.image_tokens > 0
    assert reply.timings.total_s is not None and reply.timings.total_s > 0
    again = kimi.ask([photo], "What is in it?")  # greedy: the same text again
    assert (again.answer, again.thinking, again.usage) == (reply.answer, reply.thinking, reply.usage)


def test_stream_yields_deltas_then_finished(kimi, photo):
    events = list(kimi.stream(photo, "Describe it", max_new_tokens=3))
    assert isinstance(events[-1], Finished) and events[-1].usage.generated_tokens <= 3
    assert all(not isinstance(e, Finished) for e in events[:-1])
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == kimi.ask(
        photo, "Describe it", max_new_tokens=3).answer


def test_a_prompt_alone(kimi):
    assert kimi.ask("Hello").usage.image_tokens == 0


def test_settings_are_checked_like_flags(kimi, photo):
    with pytest.raises(UsageError, match=r"Assistant\(top_p=2\): out of range"):
        Assistant(model="x", top_p=2)
    with pytest.raises(UsageError, match="out of range"):
        kimi.ask([photo], "x", temperature=-1)
    with pytest.raises(TypeError, match="unknown settings: temprature"):
        Assistant(temprature=1)


def test_bad_input_fails_before_the_engine_is_made(tmp_path):
    fresh = Assistant(model=tmp_path / "no-model")
    with pytest.raises(Exception, match="no such file"):
        fresh.ask([str(tmp_path / "missing.png")], "x")
    assert fresh._engine is None


@pytest.mark.slow
def test_think_budget_and_schema_through_the_api(thinking_checkpoint):
    import json

    from kimi_cli.model.fitted import FITTED_ANSWER

    with Assistant(model=thinking_checkpoint, device="cpu", temperature=0, max_new_tokens=120) as kimi:
        reply = kimi.ask((), "What is in the picture?", think_budget=0)
        assert (reply.thinking, reply.answer, reply.thinking_truncated) == ("", FITTED_ANSWER, True)
        schema = {"type": "object", "properties": {"ok": {"enum": ["yes", "no"]}}, "required": ["ok"],
                  "additionalProperties": False}
        reply = kimi.ask((), "What is in the picture?", json_schema=json.dumps(schema))
        assert json.loads(reply.answer)["ok"] in ("yes", "no") and not reply.thinking_truncated
