"""`kimi chat` wiring that runs before the model loads: terminal check, which chat to resume, settings."""

from __future__ import annotations

import io

import pytest

from kimi_cli.errors import UsageError
from kimi_cli.repl.launch import ChatInputs, merged_flags, open_record, require_terminal, run_chat
from kimi_cli.repl.store import ChatRecord, SessionBusy, SessionStore, TurnRecord


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path)
    for name in ("older", "newer"):
        store.save(ChatRecord(name, "m", settings={"temperature": 0.1}, turns=[TurnRecord("hi")]))
    return store


def test_require_terminal():
    require_terminal(Tty())
    with pytest.raises(UsageError, match="needs a terminal") as info:
        require_terminal(io.StringIO())
    assert "kimi ask" in (info.value.hint or "")


def test_chat_from_a_pipe_stops_before_anything_else():
    with pytest.raises(UsageError, match="needs a terminal"):
        run_chat(ChatInputs(output_format="json"), {}, stdin=io.StringIO())


@pytest.mark.parametrize(("inputs", "expected"), [
    (ChatInputs(), None),
    (ChatInputs(resume=True), "newer"),
    (ChatInputs(session="older"), "older"),
    (ChatInputs(session="brand-new"), None),  # a new conversation under that name
])
def test_open_record(store, inputs, expected):
    record = open_record(store, inputs)
    assert (record.name if record else None) == expected


@pytest.mark.parametrize(("inputs", "message"), [
    (ChatInputs(resume=True, session="older"), "cannot be combined"),
    (ChatInputs(session="../x"), "not a valid name"),
])
def test_open_record_errors(store, inputs, message):
    with pytest.raises(UsageError, match=message):
        open_record(store, inputs)


def test_continue_with_nothing_saved(tmp_path):
    with pytest.raises(UsageError, match="no saved chat to continue"):
        open_record(SessionStore(tmp_path / "empty"), ChatInputs(resume=True))


def test_resumed_settings_yield_to_flags_only():
    record = ChatRecord("x", "saved-model", settings={"temperature": 0.1, "top_p": 0.5, "max_new_tokens": 9,
                                                      "thinking": "show"})
    flags = {"model": None, "temperature": 0.7, "top_p": None, "max_new_tokens": None, "thinking": None}
    assert merged_flags(flags, record) == {"model": "saved-model", "temperature": 0.7, "top_p": 0.5,
                                           "max_new_tokens": 9, "thinking": "show"}
    assert merged_flags(flags, None) == flags


def test_a_session_open_elsewhere_is_refused_before_anything_loads(store, tmp_path):
    elsewhere = SessionStore(tmp_path)  # as far as flock can tell, another process: another open file
    elsewhere.lock("older")
    elsewhere.lock("newer")
    with pytest.raises(SessionBusy, match="chat 'older' is open in another kimi chat"):
        open_record(store, ChatInputs(session="older"))
    with pytest.raises(SessionBusy, match="chat 'newer' is open"):  # --continue does not skip to another
        open_record(store, ChatInputs(resume=True))
    elsewhere.close()
    assert open_record(store, ChatInputs(resume=True)).name == "newer"
