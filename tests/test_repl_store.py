"""Saved conversations (atomic JSON, latest, names) and their text forms (Markdown, /stats, resume)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from kimi_cli.errors import UsageError
from kimi_cli.events.types import Finished, Timings, Usage
from kimi_cli.repl.store import (
    ChatRecord,
    SessionBusy,
    SessionChanged,
    SessionStore,
    TurnRecord,
    record_from_dict,
    record_to_dict,
    write_atomic,
)
from kimi_cli.repl.transcript import files_lines, resume_lines, stats_lines, to_markdown


def _turn(prompt: str = "What is this?", answer: str = "A cat.", **kw) -> TurnRecord:
    usage = kw.pop("usage", Usage(prompt_tokens=300, image_tokens=256, generated_tokens=20, reused_prompt_tokens=0))
    timings = kw.pop("timings", Timings(first_token_s=2.0, total_s=4.0))
    return TurnRecord(prompt, kw.pop("attachments", ("/data/cat.png",)), answer, kw.pop("thinking", "Fur, whiskers."),
                      kw.pop("stop_reason", "end_turn"), usage, timings, kw.pop("tokens_per_s", 10.0), "2025-01-01T10:00:00")


def _record(*turns: TurnRecord) -> ChatRecord:
    return ChatRecord("chat1", "tiny", None, {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 8,
                                              "thinking": "collapse"}, list(turns))


def test_round_trip_keeps_everything(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    record = _record(_turn(), _turn("And now?", "Still a cat.", attachments=(), stop_reason="cancelled"))
    path = store.save(record)
    assert path == tmp_path / "sessions" / "chat1.json"
    assert store.load("chat1") == record
    assert json.loads(path.read_text())["version"] == 1


def test_unknown_keys_are_ignored():
    data = record_to_dict(_record(_turn()))
    data["future"] = 1
    data["turns"][0]["usage"]["new_counter"] = 5
    assert record_from_dict(data).turns[0].usage.prompt_tokens == 300


def test_write_atomic_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "x.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["x.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    write_atomic(target, "old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


def test_latest_is_the_most_recently_saved(tmp_path):
    store = SessionStore(tmp_path)
    assert store.latest() is None
    for name in ("b", "a"):
        store.save(ChatRecord(name, turns=[_turn()]))
    os.utime(tmp_path / "b.json", ns=(1, 1))
    assert store.latest() == "a"


def test_new_names_are_unique(tmp_path):
    store = SessionStore(tmp_path)
    first = store.new_name()
    store.save(ChatRecord(first, turns=[_turn()]))
    assert store.new_name() != first


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "x" * 101, "sp ace"])
def test_bad_names_are_usage_errors(tmp_path, name):
    with pytest.raises(UsageError):
        SessionStore(tmp_path).path(name)


def test_missing_and_corrupt_sessions_are_usage_errors(tmp_path):
    store = SessionStore(tmp_path)
    with pytest.raises(UsageError, match="no saved chat named 'nope'"):
        store.load("nope")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError, match=r"bad\.json: not valid JSON \(the file ends early\)"):
        store.load("bad")


def test_from_finished_without_a_final_event_is_cut_off():
    turn = TurnRecord.from_finished("q", (), "par", "", None)
    assert turn.stop_reason == "cancelled" and turn.answer == "par"
    done = TurnRecord.from_finished("q", (), "a", "t", Finished("end_turn", Usage(prompt_tokens=3)))
    assert done.usage.prompt_tokens == 3 and done.at


def test_markdown_has_files_thinking_answer_and_cut_off_marks():
    text = to_markdown(_record(_turn(), _turn("More?", "Partial", attachments=(), thinking="",
                                              stop_reason="cancelled")))
    assert text.startswith("# kimi chat chat1\n")
    assert "## 1. You\n\n- attached: `/data/cat.png`\n\nWhat is this?" in text
    assert "<details><summary>Thinking</summary>\n\nFur, whiskers.\n\n</details>\n\nA cat." in text
    assert "## 2. You\n\nMore?\n\n### Kimi\n\nPartial\n\n*(cut off by Ctrl-C)*" in text


def test_stats_show_computed_and_reused_tokens_for_the_last_turn_and_all():
    second = _turn(usage=Usage(prompt_tokens=330, image_tokens=256, generated_tokens=20, reused_prompt_tokens=310),
                   timings=Timings(first_token_s=0.5), tokens_per_s=20.0)
    lines = stats_lines([_turn(), second])
    table = {row[0]: row[1:] for row in (re.split(r"\s{2,}", line.strip()) for line in lines)}
    assert table["last turn"] == ["all 2 turns"]
    assert table["prompt tokens"] == ["330", "630"]
    assert table["computed"] == ["20", "320"]
    assert table["reused from cache"] == ["310 (94%)", "310 (49%)"]
    assert table["time to first token"] == ["0.50 s", "1.25 s"]
    assert table["speed"] == ["20.0 tokens/s", "13.3 tokens/s"]  # all: 40 tokens in 3 s
    assert stats_lines([]) == ["no turns yet"]


def test_files_and_resume_lines():
    turns = [_turn(), _turn("Next", "Done.", attachments=(), stop_reason="max_tokens")]
    assert files_lines(turns, ["/x/new.pdf"]) == ["turn 1: /data/cat.png", "next message: /x/new.pdf"]
    assert files_lines([], []) == ["no files attached (/attach FILE or @path in a message)"]
    lines = resume_lines(_record(*turns))
    assert lines == ["resumed chat chat1: 2 turns", "› What is this? [cat.png]", "  A cat.", "› Next",
                     "  Done. (cut off at the token limit)"]
    long = resume_lines(_record(_turn("q", "word " * 100, stop_reason="cancelled")), width=60)
    assert long[2].endswith("… (cut off by Ctrl-C)") and len(long[2]) <= 60


def _good() -> dict:
    return record_to_dict(_record(_turn()))


def _with(change) -> str:
    data = _good()
    change(data)
    return json.dumps(data)


BAD_SESSIONS = [
    (json.dumps({**_good(), "turns": "abc"}), "turns must be a list, not \"abc\""),
    (json.dumps({**_good(), "turns": [1, 2]}), "turn 1 must be an object, not a number"),
    ("[1, 2]", "the file must hold a JSON object, not a list"),
    (_with(lambda d: d["turns"][0].update(attachments=[5])), "turn 1: attachment 1 must be a file path (a string), not 5"),
    (_with(lambda d: d["turns"][0].update(tokens_per_s="fast")),
     "turn 1: tokens_per_s must be a number of at least 0 or null, not \"fast\""),
    (_with(lambda d: d["turns"][0].update(tokens_per_s=float("nan"))), "tokens_per_s must be a number"),
    (_with(lambda d: d["turns"][0]["usage"].update(prompt_tokens=True)), "turn 1: usage.prompt_tokens must be a whole"),
    (_with(lambda d: d["turns"][0]["usage"].update(generated_tokens=-4)), "usage.generated_tokens must be a whole"),
    (_with(lambda d: d["turns"][0].update(timings=[1])), "turn 1: timings must be an object or null, not a list"),
    (_with(lambda d: d["turns"][0].pop("prompt")), "turn 1: prompt is missing"),
    (_with(lambda d: d.pop("turns")), "turns is missing"),
    (_with(lambda d: d.pop("name")), "name is missing"),
    (_with(lambda d: d.update(settings="hot")), "settings must be an object or null"),
    (_with(lambda d: d.update(system=3)), "system must be a string or null, not 3"),
    (_with(lambda d: d["turns"][0].update(tokens_per_s="\x1b]0;PWNED\x07\x1b[2J")),
     'tokens_per_s must be a number of at least 0 or null, not "\\u001b]0;PWNED\\u0007\\u001b[2J"'),
    (json.dumps(_good())[:-40], "not valid JSON (the file ends early)"),
    ("[" * 100_000, "not valid JSON"),
    ("", "not valid JSON (the file ends early)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SESSIONS)
def test_bad_sessions_are_one_usage_error_naming_the_file(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(UsageError) as info:
        SessionStore(tmp_path).load("bad")
    assert info.value.message.startswith(f"{tmp_path / 'bad.json'}: ")
    assert message in info.value.message and "\n" not in info.value.message and "\x1b" not in info.value.message
    assert "move it aside" in (info.value.hint or "")
    assert info.value.exit_code == 2


def test_non_utf8_and_non_regular_sessions(tmp_path):
    (tmp_path / "latin.json").write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(UsageError, match=r"latin\.json: not UTF-8 text \(byte 0xe9 at offset 13\)"):
        SessionStore(tmp_path).load("latin")
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(UsageError, match="not a regular file"):  # and no hang waiting for a writer
        SessionStore(tmp_path).load("fifo")


def test_a_session_takes_the_name_of_its_file(tmp_path):
    store = SessionStore(tmp_path)
    (tmp_path / "copy.json").write_text(_with(lambda d: d.update(name="../../elsewhere")))
    assert store.load("copy").name == "copy"


def test_continue_skips_a_damaged_newest_session_and_says_so(tmp_path):
    store = SessionStore(tmp_path)
    store.save(_record(_turn()))
    time.sleep(0.01)
    (tmp_path / "newest.json").write_text('{"name": "newest", "turns": [')
    warnings: list[str] = []
    record = SessionStore(tmp_path).open_latest(warnings.append)
    assert record.name == "chat1"
    assert warnings == [f"{tmp_path / 'newest.json'}: not valid JSON (the file ends early): Expecting value "
                        "(line 1, column 30); skipped it, continuing chat 'chat1'"]
    assert (tmp_path / "newest.json").read_text() == '{"name": "newest", "turns": ['  # left for the user


def test_continue_with_nothing_readable_is_a_usage_error(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(UsageError, match="no saved chat to continue: none of the 1 .* can be read") as info:
        SessionStore(tmp_path).open_latest(lambda text: None)
    assert info.value.hint == "start a new one with kimi chat"


def test_a_save_never_writes_over_turns_it_did_not_load(tmp_path):
    mine, theirs = SessionStore(tmp_path), SessionStore(tmp_path)
    mine.save(_record(_turn("one")))
    record = theirs.load("chat1")
    record.turns.append(_turn("two, from another program"))
    theirs.save(record)
    stale = mine.load("chat1")
    time.sleep(0.01)
    theirs.save(ChatRecord("chat1", turns=[*record.turns, _turn("three")]))
    stale.turns.append(_turn("mine"))
    with pytest.raises(SessionChanged):
        mine.save(stale)
    assert [t.prompt for t in theirs.load("chat1").turns][-1] == "three"


_HOLD = """
import sys, time
from pathlib import Path
from kimi_cli.repl.store import SessionStore
SessionStore(Path(sys.argv[1])).lock(sys.argv[2])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_session_open_in_another_process_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path), "shared"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SessionBusy, match=rf"chat 'shared' is open in another kimi chat \(pid {holder.pid}\)"):
            SessionStore(tmp_path).lock("shared")
        SessionStore(tmp_path).lock("other")  # only that name is held
    finally:
        holder.kill()
        holder.wait()
    store = SessionStore(tmp_path)
    store.lock("shared")  # the lock died with its process
    assert (tmp_path / ".shared.lock").stat().st_mode & 0o777 == 0o600


def test_new_names_skip_names_locked_elsewhere(tmp_path):
    one, two = SessionStore(tmp_path), SessionStore(tmp_path)
    assert one.claim_new("x") == "x"
    assert two.claim_new("x") == "x-2"  # neither has saved yet: the lock tells them apart


def test_session_folder_is_private(tmp_path):
    SessionStore(tmp_path / "kimi" / "sessions").save(_record(_turn()))
    assert (tmp_path / "kimi").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "kimi" / "sessions").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "kimi" / "sessions" / "chat1.json").stat().st_mode & 0o777 == 0o600


def test_an_unsaved_chat_leaves_no_lock_file(tmp_path):
    store = SessionStore(tmp_path)
    store.lock("kept")
    store.save(ChatRecord("kept", turns=[_turn()]))
    store.lock("empty")
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.lock", "kept.json"]
    SessionStore(tmp_path).lock("empty")  # free again


def test_a_file_name_that_is_not_utf8_survives_the_round_trip(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # a lone surrogate in Python
    store = SessionStore(tmp_path)
    store.save(_record(_turn(attachments=(f"/data/{name}",))))
    assert store.load("chat1").turns[0].attachments == (f"/data/{name}",)
    store.save(_record(_turn("caf\u00e9")))
    assert "café" in (tmp_path / "chat1.json").read_text(encoding="utf-8")  # readable when it can be


def test_a_process_that_saved_nothing_leaves_no_lock_file_behind(tmp_path):
    code = "import sys; from pathlib import Path; from kimi_cli.repl.store import SessionStore; " \
           "s = SessionStore(Path(sys.argv[1])); s.lock('empty'); s.lock('kept'); Path(sys.argv[1], 'kept.json').touch()"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.lock", "kept.json"]
