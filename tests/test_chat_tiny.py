"""`kimi chat` on the real tiny checkpoint through prompt_toolkit's pipe input: cached follow-ups."""

from __future__ import annotations

import pytest
from fakes import make_env
from PIL import Image
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kimi_cli.engine.local import LocalEngine
from kimi_cli.media.options import MediaOptions
from kimi_cli.repl.chat import Chat, PlannedMedia, restore_messages
from kimi_cli.repl.session import make_session, run_repl
from kimi_cli.repl.store import ChatRecord, SessionStore

SETTINGS = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 6, "thinking": "collapse"}


def _chat(tiny_model, tiny_checkpoint, tmp_path, record=None, messages=None) -> Chat:
    record = record or ChatRecord("tiny-chat", str(tiny_checkpoint), settings=dict(SETTINGS))
    media = PlannedMedia(MediaOptions(), str(tiny_checkpoint))
    return Chat(LocalEngine(tiny_model, keep_cache=True, implicit_thinking=False), record,
                SessionStore(tmp_path / "sessions"), media, make_env(), messages=messages)


def _drive(chat: Chat, keys: str) -> None:
    with create_pipe_input() as pipe:
        pipe.send_text(keys + "\x04")
        run_repl(chat, make_session(InMemoryHistory(), input=pipe, output=DummyOutput()))


@pytest.fixture
def vision_calls(tiny_model):
    """How many times the vision tower ran (one entry per forward call)."""
    calls: list[int] = []
    handle = tiny_model.model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    yield calls
    handle.remove()


def test_follow_up_reuses_the_cache_and_does_not_encode_the_image_again(tiny_model, tiny_checkpoint, tmp_path,
                                                                          monkeypatch, vision_calls):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (200, 150), (30, 120, 200)).save(tmp_path / "sky.png")
    chat = _chat(tiny_model, tiny_checkpoint, tmp_path)
    _drive(chat, "What is in @sky.png?\r" + "And the colour?\r" + "/stats\r")
    first, second = chat.record.turns
    assert first.attachments == (f"{tmp_path}/sky.png",) and second.attachments == ()
    assert first.usage.image_tokens > 0 and first.usage.reused_prompt_tokens == 0
    # Everything up to the first turn's generation prompt comes from the cache, image included.
    assert second.usage.reused_prompt_tokens > first.usage.image_tokens
    assert second.usage.prompt_tokens - second.usage.reused_prompt_tokens < first.usage.prompt_tokens
    assert len(vision_calls) == 1  # the vision tower ran for the first turn only
    assert "reused from cache" in chat.env.stdout.getvalue()

    # The saved conversation resumes with its image read again from its path.
    store = SessionStore(tmp_path / "sessions")
    record = store.load("tiny-chat")
    messages = restore_messages(record, chat.media, chat.say)
    assert [len(m.images) for m in messages] == [1, 0]
    resumed = _chat(tiny_model, tiny_checkpoint, tmp_path, record, messages)
    _drive(resumed, "One more?\r")
    assert len(resumed.record.turns) == 3
    assert resumed.record.turns[2].usage.reused_prompt_tokens == 0
    assert len(vision_calls) == 2  # a fresh engine encodes the image once more, from the file
