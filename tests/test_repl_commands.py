"""Slash-command parsing, `/set` values and the help text: pure, table-driven."""

from __future__ import annotations

import pytest

from kimi_cli.errors import UsageError
from kimi_cli.repl.commands import (
    COMMANDS,
    KEYS,
    Invocation,
    help_text,
    is_command,
    parse_command,
    parse_setting,
    suggest,
)


@pytest.mark.parametrize(("line", "expected"), [
    ("/help", True),
    ("  /exit  ", True),
    ("/attach a.png", True),
    ("/?", True),
    ("/home/me/cat.png what is this?", False),
    ("what does /help do?", False),
    ("hello", False),
    ("", False),
])
def test_is_command(line, expected):
    assert is_command(line) is expected


@pytest.mark.parametrize(("line", "expected"), [
    ("/help", Invocation("help")),
    ("/HELP", Invocation("help")),
    ("/?", Invocation("help")),
    ("/quit", Invocation("exit")),
    ("/q", Invocation("exit")),
    ("/attach a.png b.pdf:1-3", Invocation("attach", ("a.png", "b.pdf:1-3"))),
    ('/attach "my file.png" other\\ one.png', Invocation("attach", ("my file.png", "other one.png"))),
    ("/attach '~/shots/x y.png'", Invocation("attach", ("~/shots/x y.png",))),
    ("/save", Invocation("save")),
    ("/save notes.md", Invocation("save", ("notes.md",))),
    ("/set temperature 0.2", Invocation("set", ("temperature", "0.2"))),
    ("/set", Invocation("set")),
    ("/stats", Invocation("stats")),
])
def test_parse_command(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize(("line", "message", "hint"), [
    ("/atach x.png", "unknown command /atach", "did you mean /attach?"),
    ("/sav", "unknown command /sav", "did you mean /save?"),
    ("/stat", "unknown command /stat", "did you mean /stats?"),
    ("/exitt", "unknown command /exitt", "did you mean /exit?"),
    ("/xyzzy", "unknown command /xyzzy", "/help lists the commands"),
    ("/attach", "/attach: missing arguments", "usage: /attach FILE..."),
    ("/help me", "/help: too many arguments", "usage: /help"),
    ("/save a.md b.md", "/save: too many arguments", "usage: /save [PATH]"),
    ('/attach "unclosed.png', "cannot read the arguments", "close the quote"),
])
def test_bad_commands_explain_themselves(line, message, hint):
    with pytest.raises(UsageError) as info:
        parse_command(line)
    assert info.value.message.startswith(message)
    assert hint in (info.value.hint or "")


@pytest.mark.parametrize(("word", "expected"), [
    ("att", "attach"), ("fi", "files"), ("cler", "clear"), ("thnk", "think"), ("rety", "retry"),
    ("quti", "exit"), ("zzzzzz", None),
])
def test_suggest(word, expected):
    assert suggest(word) == expected


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("temperature", "0.2", ("temperature", 0.2)),
    ("temperature", "0", ("temperature", 0.0)),
    ("temp", "1.5", ("temperature", 1.5)),
    ("top_p", "0.9", ("top_p", 0.9)),
    ("top-p", "1", ("top_p", 1.0)),
    ("max_tokens", "256", ("max_new_tokens", 256)),
    ("max-new-tokens", "8", ("max_new_tokens", 8)),
    ("thinking", "show", ("thinking", "show")),
    ("THINKING", "hide", ("thinking", "hide")),
])
def test_parse_setting(key, value, expected):
    assert parse_setting(key, value) == expected


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("temperature", "-1", "out of range"),
    ("temperature", "hot", "not a number"),
    ("temperature", "nan", "out of range"),
    ("temperature", "inf", "out of range"),
    ("top_p", "0", "out of range"),
    ("top_p", "1.5", "out of range"),
    ("max_tokens", "0", "out of range"),
    ("max_tokens", "2.5", "not an integer"),
    ("thinking", "loud", "not one of collapse, show, hide"),
    ("temprature", "1", "unknown setting"),
])
def test_bad_settings(key, value, fragment):
    with pytest.raises(UsageError) as info:
        parse_setting(key, value)
    assert fragment in info.value.message


def test_unknown_setting_suggests_the_nearest():
    with pytest.raises(UsageError) as info:
        parse_setting("temprature", "1")
    assert info.value.hint == "did you mean temperature?"


def test_help_lists_every_command_setting_and_key():
    text = help_text()
    for spec in COMMANDS:
        assert f"/{spec.name}" in text and spec.summary in text
    for key in ("temperature", "top_p", "max_tokens", "thinking"):
        assert key in text
    for key, doc in KEYS:
        assert key in text and doc in text
