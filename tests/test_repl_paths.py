"""`@path` mentions and file-name completion after `/attach ` and `@` (spaces, quotes, `~`)."""

from __future__ import annotations

import os

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from kimi_cli.errors import UsageError
from kimi_cli.repl.paths import (
    PathCompleter,
    Target,
    completion_target,
    extract_mentions,
    quote_path,
    resolve_spec,
)

FILES = {"cat.png", "my cat.png", "notes.txt", "report.pdf", "/abs/x.png"}


def _is_file(path: str) -> bool:
    return path.split(":")[0] in FILES


@pytest.mark.parametrize(("text", "files", "cleaned"), [
    ("What is @cat.png?", ["cat.png"], "What is cat.png?"),
    ("@cat.png", ["cat.png"], "cat.png"),
    ('compare @"my cat.png" and @cat.png', ["my cat.png", "cat.png"], "compare my cat.png and cat.png"),
    ("compare @my\\ cat.png, please", ["my cat.png"], "compare my cat.png, please"),
    ("look at @'my cat.png'.", ["my cat.png"], "look at my cat.png."),
    ("pages @report.pdf:1-3 now", ["report.pdf:1-3"], "pages report.pdf:1-3 now"),
    ("@/abs/x.png", ["/abs/x.png"], "/abs/x.png"),
    ("mail me@example.com or ping @sam", [], "mail me@example.com or ping @sam"),
    ("no mentions\nat all", [], "no mentions\nat all"),
    ("two lines\n@cat.png", ["cat.png"], "two lines\ncat.png"),
])
def test_extract_mentions(text, files, cleaned):
    assert extract_mentions(text, _is_file) == (files, cleaned)


@pytest.mark.parametrize("text", ["see @missing.png", 'see @"missing file"', "see @'gone'"])
def test_a_mention_that_surely_meant_a_file_must_exist(text):
    with pytest.raises(UsageError, match="no such file"):
        extract_mentions(text, _is_file)


def test_resolve_spec_keeps_pages_and_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "r.pdf").write_bytes(b"%PDF")
    assert resolve_spec("~/r.pdf:2-3") == f"{tmp_path}/r.pdf:2-3"
    monkeypatch.chdir(tmp_path)
    assert resolve_spec("r.pdf") == f"{tmp_path}/r.pdf"


@pytest.mark.parametrize(("text", "expected"), [
    ("/attach ", Target("", "", None, False)),
    ("/attach ca", Target("ca", "ca", None, False)),
    ("/attach a.png ~/sh", Target("~/sh", "~/sh", None, False)),
    ('/attach "my c', Target('"my c', "my c", '"', False)),
    ("/attach 'my c", Target("'my c", "my c", "'", False)),
    ("/attach my\\ c", Target("my\\ c", "my c", None, False)),
    ("what is @ca", Target("@ca", "ca", None, True)),
    ('what is @"my c', Target('@"my c', "my c", '"', True)),
    ("@", Target("@", "", None, True)),
    ("what is ca", None),
    ("/attach", None),
    ("/save ca", None),
    ("me@ex", None),
])
def test_completion_target(text, expected):
    assert completion_target(text) == expected


@pytest.mark.parametrize(("path", "is_dir", "quote", "expected"), [
    ("cat.png", False, None, "cat.png"),
    ("my cat.png", False, None, '"my cat.png"'),
    ("my dir/", True, None, '"my dir/'),
    ("my cat.png", False, "'", "'my cat.png'"),
    ("it's.png", False, "'", '"it\'s.png"'),
    ('say "hi".png', False, None, '"say \\"hi\\".png"'),
])
def test_quote_path(path, is_dir, quote, expected):
    assert quote_path(path, is_dir, quote) == expected


def _complete(text: str) -> list[tuple[str, int]]:
    completer = PathCompleter(["attach", "files", "save"])
    found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
    return [(c.text, c.start_position) for c in found]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    for name in ("my photo.png", "map.pdf", ".hidden.png", "other.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "my shots").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_attach_completes_a_name_with_a_space(folder):
    assert _complete("/attach my") == [('"my photo.png"', -2), ('"my shots/', -2)]
    assert _complete(f"/attach {folder}/my\\ p") == [(f'"{folder}/my photo.png"', -len(f"{folder}/my\\ p"))]
    assert _complete("/attach my p") == []  # an unquoted space ended the word: "p" names nothing


def test_attach_lists_files_and_folders_without_hidden_ones(folder):
    assert [text for text, _ in _complete("/attach m")] == ["map.pdf", '"my photo.png"', '"my shots/']
    assert [text for text, _ in _complete("/attach .h")] == [".hidden.png"]


def test_completion_inside_an_open_quote_and_after_an_escape(folder):
    assert _complete('/attach "my ph') == [('"my photo.png"', -len('"my ph'))]
    assert _complete("/attach my\\ ph") == [('"my photo.png"', -len("my\\ ph"))]
    assert _complete('/attach "my shots/') == []


def test_tilde_is_kept_as_typed(folder):
    assert _complete("/attach ~/ma") == [("~/map.pdf", -4)]
    assert _complete("/attach ~/my\\ p") == [('"~/my photo.png"', -7)]
    assert _complete("/attach ~") == [("~/", -1)]


def test_at_mentions_complete_inside_a_message(folder):
    assert _complete("compare @ma") == [("@map.pdf", -3)]
    assert _complete('compare @"my p') == [('@"my photo.png"', -6)]


def test_command_names_complete_after_a_slash(folder):
    assert _complete("/") == [("/attach", -1), ("/files", -1), ("/save", -1)]
    assert _complete("/fi") == [("/files", -3)]
    assert _complete("plain text") == []


def test_completed_mention_round_trips_through_extract(folder):
    text = "what is in @my\\ p"
    (typed, start), = _complete(text)
    message = text[:start] + typed + "?"
    assert message == 'what is in @"my photo.png"?'
    files, cleaned = extract_mentions(message)
    assert files == ["my photo.png"] and os.path.isfile(files[0])
    assert cleaned == "what is in my photo.png?"
