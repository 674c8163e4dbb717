"""The REPL driven through prompt_toolkit's pipe input with a scripted engine: keys, commands, saving."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import CTRL_C, ScriptedEngine, make_env, reply_events
from PIL import Image
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, Timings, Usage
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import TextPart
from kimi_cli.repl.chat import Chat, PlannedMedia
from kimi_cli.repl.session import make_session, open_history, run_repl
from kimi_cli.repl.store import ChatRecord, SessionStore

SETTINGS = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 64, "thinking": "collapse"}
ENTER, ALT_ENTER, CTRL_J, CTRL_D, CTRL_C_KEY = "\r", "\x1b\r", "\n", "\x04", "\x03"


class Engine(ScriptedEngine):
    """A scripted engine that replays a fresh copy of its script on every turn, and counts resets."""

    def __init__(self, events, **kw) -> None:
        super().__init__(events, **kw)
        self.script = list(events)
        self.resets = 0

    def stream(self, request):
        self.events = list(self.script)
        return super().stream(request)

    def reset(self) -> None:
        self.resets += 1


def make_chat(tmp_path: Path, events=None, name: str = "t1") -> Chat:
    engine = Engine(events if events is not None else reply_events("Hmm, a cat.", "A cat.", usage=Usage(
        prompt_tokens=10, generated_tokens=5), timings=Timings(first_token_s=0.1), tokens_per_s=50.0))
    record = ChatRecord(name, "tiny", settings=dict(SETTINGS))
    return Chat(engine, record, SessionStore(tmp_path / "sessions"), PlannedMedia(MediaOptions(), None), make_env())


def drive(chat: Chat, keys: str, history=None) -> int:
    """Type `keys` into the REPL (ending it with Ctrl-D unless it already ends)."""
    with create_pipe_input() as pipe:
        pipe.send_text(keys if keys.endswith((CTRL_D, "/exit" + ENTER)) else keys + CTRL_D)
        session = make_session(history or InMemoryHistory(), input=pipe, output=DummyOutput())
        return run_repl(chat, session)


def prompts(chat: Chat) -> list[str]:
    return [turn.prompt for turn in chat.record.turns]


def out(chat: Chat) -> str:
    return chat.env.stdout.getvalue()


def err(chat: Chat) -> str:
    return chat.env.stderr.getvalue()


def test_enter_sends_and_the_answer_is_kept(tmp_path):
    chat = make_chat(tmp_path)
    assert drive(chat, "hello" + ENTER + "again" + ENTER) == 0
    assert prompts(chat) == ["hello", "again"]
    assert [t.answer for t in chat.record.turns] == ["A cat.", "A cat."]
    assert out(chat) == "A cat.\nA cat.\n"
    history = chat.engine.requests[1].messages
    assert [m.role for m in history] == ["user", "assistant", "user"]
    assert history[1].parts == (TextPart("A cat."),)  # the answer only: thinking never goes back


@pytest.mark.parametrize(("keys", "expected"), [
    ("one" + ALT_ENTER + "two" + ENTER, "one\ntwo"),
    ("one" + CTRL_J + "two" + ENTER, "one\ntwo"),
    ("\x1b[200~pasted\nthree\r\nlines\x1b[201~" + ENTER, "pasted\nthree\nlines"),
    ("typo" + CTRL_C_KEY + "clean" + ENTER, "clean"),
    ("   " + ENTER + "real" + ENTER, "real"),
])
def test_keys(tmp_path, keys, expected):
    chat = make_chat(tmp_path)
    drive(chat, keys)
    assert prompts(chat) == [expected]


def test_ctrl_d_and_exit_leave(tmp_path):
    chat = make_chat(tmp_path)
    assert drive(chat, CTRL_D + "never sent" + ENTER) == 0
    assert drive(chat, "/exit" + ENTER) == 0
    assert prompts(chat) == []


def test_ctrl_c_during_generation_keeps_the_partial_answer(tmp_path):
    events = [*reply_events("Looking.", "A ca", finish=False), CTRL_C, AnswerDelta("t."), Finished("end_turn")]
    chat = make_chat(tmp_path, events)
    drive(chat, "what?" + ENTER)
    turn, = chat.record.turns
    assert (turn.answer, turn.stop_reason) == ("A ca", "cancelled")
    assert out(chat) == "A ca\n"
    assert "cut off by Ctrl-C" in err(chat)
    saved = json.loads((tmp_path / "sessions" / "t1.json").read_text())
    assert saved["turns"][0]["answer"] == "A ca" and saved["turns"][0]["stop_reason"] == "cancelled"


def test_an_engine_error_keeps_the_conversation_going(tmp_path):
    chat = make_chat(tmp_path, [AnswerDelta("x"), ErrorEvent("out of GPU memory", hint="smaller images")])
    drive(chat, "first" + ENTER)
    assert prompts(chat) == []
    assert "kimi: error: out of GPU memory" in err(chat) and "not kept" in err(chat)


def test_every_turn_is_saved(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "one" + ENTER + "two" + ENTER)
    saved = json.loads((tmp_path / "sessions" / "t1.json").read_text())
    assert [t["prompt"] for t in saved["turns"]] == ["one", "two"]
    assert saved["turns"][0]["thinking"] == "Hmm, a cat."


def test_attach_and_at_mentions_go_with_their_turn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), "red").save(tmp_path / "red one.png")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "blue.png")
    chat = make_chat(tmp_path)
    drive(chat, '/attach "red one.png"' + ENTER + "/files" + ENTER + "first" + ENTER
          + "and @blue.png?" + ENTER + "third" + ENTER + "/files" + ENTER)
    assert [t.attachments for t in chat.record.turns] == [
        (f"{tmp_path}/red one.png",), (f"{tmp_path}/blue.png",), ()]
    assert prompts(chat)[1] == "and blue.png?"
    assert f"next message: {tmp_path}/red one.png" in out(chat)
    assert f"turn 2: {tmp_path}/blue.png" in out(chat)
    last = chat.engine.requests[-1].messages
    assert [len(m.images) for m in last] == [1, 0, 1, 0, 0]  # images stay with their turn


def test_bad_attachments_are_refused_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("plain text")
    chat = make_chat(tmp_path)
    drive(chat, "/attach missing.png" + ENTER + "/attach notes.txt" + ENTER + "@gone.png hi" + ENTER)
    assert chat.pending == [] and prompts(chat) == []
    assert err(chat).count("kimi: error:") == 3


def test_unknown_command_suggests_the_nearest(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "/atach x" + ENTER)
    assert "kimi: error: unknown command /atach\nhint: did you mean /attach?" in err(chat)


def test_think_retry_and_stats(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "/think" + ENTER + "q" + ENTER + "/think" + ENTER + "/retry" + ENTER + "/stats" + ENTER)
    assert "/think: no answer yet" in err(chat)
    assert "Hmm, a cat." in out(chat)
    assert prompts(chat) == ["q"] and len(chat.engine.requests) == 2
    assert len(chat.engine.requests[1].messages) == 1  # the retry sends the same single message
    assert "50.0 tokens/s" in out(chat) and "time to first token" in out(chat)


def test_set_changes_the_next_request(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "/set temperature 0" + ENTER + "/set max_tokens 7" + ENTER + "/set top_p 2" + ENTER
          + "/set" + ENTER + "q" + ENTER)
    settings = chat.engine.requests[0].settings
    assert (settings.temperature, settings.max_new_tokens, settings.top_p) == (0.0, 7, 1.0)
    assert "kimi: error: /set top_p: 2 is out of range" in err(chat)
    assert "max_tokens = 7" in out(chat)


def test_clear_starts_a_new_conversation(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "one" + ENTER + "/clear" + ENTER + "two" + ENTER)
    assert chat.engine.resets == 1
    assert prompts(chat) == ["two"] and chat.record.name != "t1"
    assert len(chat.engine.requests[1].messages) == 1
    assert "kimi chat --session t1" in out(chat)
    assert sorted(p.name for p in (tmp_path / "sessions").glob("*.json")) == sorted(["t1.json", chat.record.name + ".json"])


def test_save_writes_markdown_and_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    chat = make_chat(tmp_path)
    drive(chat, "q" + ENTER + "/save" + ENTER + "/save out/chat.json" + ENTER + "/save x.doc" + ENTER)
    markdown = (tmp_path / "kimi-chat-t1.md").read_text()
    assert "## 1. You\n\nq\n\n### Kimi" in markdown and "A cat." in markdown
    data = json.loads((tmp_path / "out" / "chat.json").read_text())
    assert data["turns"][0]["answer"] == "A cat." and data["name"] == "t1"
    assert "unknown format .doc" in err(chat)


def test_save_never_replaces_a_file_unasked_and_keeps_its_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.md"
    notes.write_text("my own notes\n")
    notes.chmod(0o644)
    chat = make_chat(tmp_path)
    drive(chat, "q" + ENTER + "/save notes.md" + ENTER)
    assert notes.read_text() == "my own notes\n"
    assert "kimi: error: /save notes.md: the file exists\nhint: /save! notes.md replaces it\n" in err(chat)
    drive(chat, "/save! notes.md" + ENTER)
    assert "A cat." in notes.read_text()
    assert notes.stat().st_mode & 0o777 == 0o644
    assert "saved 1 turns to notes.md" in out(chat)


def test_save_does_not_make_missing_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    chat = make_chat(tmp_path)
    drive(chat, "q" + ENTER + "/save no/such/dir/chat.md" + ENTER + "/save! nowhere/x.json" + ENTER)
    assert not (tmp_path / "no").exists() and not (tmp_path / "nowhere").exists()
    assert "/save no/such/dir/chat.md: there is no folder no/such/dir" in err(chat)
    assert "hint: make it first (mkdir -p no/such/dir)" in err(chat)
    assert "there is no folder nowhere" in err(chat)


def test_save_a_new_file_follows_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        drive(make_chat(tmp_path), "q" + ENTER + "/save new.md" + ENTER)
    finally:
        os.umask(old)
    assert (tmp_path / "new.md").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "sessions" / "t1.json").stat().st_mode & 0o777 == 0o600


def test_bang_only_where_a_command_has_it(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "/clear!" + ENTER + "/help" + ENTER)
    assert "kimi: error: unknown command /clear!\nhint: /clear has no ! form" in err(chat)
    assert "Commands:" in out(chat)


def test_a_crashing_command_is_one_line_and_the_repl_goes_on(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "q" + ENTER)
    # A value of the wrong type (what an unchecked session file used to bring in) breaks /stats.
    chat.record.turns[0] = replace(chat.record.turns[0], tokens_per_s="fast")
    drive(chat, "/stats" + ENTER + "again" + ENTER)
    assert "kimi: error: /stats failed: TypeError" in err(chat)
    assert "hint: this is a bug in kimi; run with --debug to see the traceback" in err(chat)
    assert "Traceback" not in err(chat)
    assert prompts(chat) == ["q", "again"]


def test_a_crashing_turn_is_one_line_and_the_repl_goes_on(tmp_path):
    chat = make_chat(tmp_path)

    def boom(request):
        raise RuntimeError("engine exploded\nsecond line")

    chat.engine.stream = boom
    drive(chat, "q" + ENTER + "/help" + ENTER)
    assert "kimi: error: sending that message failed: RuntimeError: engine exploded\n" in err(chat)
    assert "Commands:" in out(chat)


def test_history_file_and_data_folder_are_private(tmp_path):
    path = tmp_path / "data" / "kimi" / "history"
    open_history(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    path.chmod(0o644)  # as older versions made it
    open_history(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_history_file_keeps_messages_between_sessions(tmp_path):
    path = tmp_path / "data" / "history"
    drive(make_chat(tmp_path), "remember me" + ENTER, history=open_history(path))
    chat = make_chat(tmp_path, name="t2")
    drive(chat, "\x1b[A" + ENTER, history=open_history(path))  # Up, Enter: send it again
    assert prompts(chat) == ["remember me"]


def test_a_session_rewritten_behind_our_back_is_forked_not_overwritten(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "one" + ENTER)
    other = SessionStore(tmp_path / "sessions")  # a writer that ignored the lock (an older kimi, a script)
    theirs = other.load("t1")
    theirs.turns.append(replace(theirs.turns[0], prompt="theirs"))
    other.save(theirs)
    drive(chat, "two" + ENTER)
    assert "kimi: warning: chat 't1' was changed by another program since it was opened; this conversation " \
           "is now saved as 't1-2' (kimi chat --session t1-2)" in err(chat)
    saved = {p.stem: [t["prompt"] for t in json.loads(p.read_text())["turns"]]
             for p in (tmp_path / "sessions").glob("*.json")}
    assert saved == {"t1": ["one", "theirs"], "t1-2": ["one", "two"]}


def test_set_think_budget_reaches_the_request_and_off_unsets_it(tmp_path):
    chat = make_chat(tmp_path)
    drive(chat, "/set think_budget 64" + ENTER + "q" + ENTER + "/set think_budget off" + ENTER + "r" + ENTER)
    budgets = [r.settings.think_budget for r in chat.engine.requests]
    assert budgets == [64, None]
    assert chat.record.settings["think_budget"] is None  # saved with the session
