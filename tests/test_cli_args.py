"""Pure parsing of `kimi ask` arguments and stdin."""

from __future__ import annotations

import pytest

from kimi_cli.cli.args import compose_prompt, split_args
from kimi_cli.errors import UsageError

EXISTING = {"a.png", "doc.pdf", "notes"}


def exists(path: str) -> bool:
    return path in EXISTING


@pytest.mark.parametrize(
    ("args", "files", "prompt"),
    [
        ([], [], None),
        (["What is 2+2?"], [], "What is 2+2?"),
        (["a.png", "Describe it."], ["a.png"], "Describe it."),
        (["a.png", "doc.pdf", "Compare"], ["a.png", "doc.pdf"], "Compare"),
        (["a.png"], ["a.png"], None),
        (["-"], ["-"], None),
        (["-", "What is this?"], ["-"], "What is this?"),
        (["doc.pdf:1-3", "Summarise"], ["doc.pdf:1-3"], "Summarise"),
        (["doc.pdf:1-3"], ["doc.pdf:1-3"], None),
        # A mistyped file name is a file (so it fails as "missing"), not a prompt.
        (["phto.png"], ["phto.png"], None),
        (["a.png", "what is in photo.png here"], ["a.png"], "what is in photo.png here"),
        # An existing path without a media suffix is still a file.
        (["notes"], ["notes"], None),
    ],
)
def test_split_args(args, files, prompt):
    assert split_args(args, exists) == (files, prompt)


@pytest.mark.parametrize(
    ("prompt", "piped", "expected"),
    [
        ("Question", None, "Question"),
        ("Question", "", "Question"),
        ("Review this", "diff --git a b\n+x\n", "diff --git a b\n+x\n\nReview this"),
        (None, "piped prompt\n", "piped prompt"),
        ("Question", "\n\n", "Question"),
    ],
)
def test_compose_prompt(prompt, piped, expected):
    assert compose_prompt(prompt, piped) == expected


@pytest.mark.parametrize(("prompt", "piped"), [(None, None), (None, "  \n"), ("   ", None)])
def test_missing_prompt_is_a_usage_error(prompt, piped):
    with pytest.raises(UsageError) as err:
        compose_prompt(prompt, piped)
    assert err.value.exit_code == 2
    assert err.value.hint


def test_an_unexpected_exception_is_one_line_without_debug(monkeypatch, capsys):
    import pytest

    import kimi_cli.cli.app as app_module
    from kimi_cli.cli import main

    def broken(**_kwargs):
        raise RuntimeError("something inside\nsecond line")

    monkeypatch.setattr(app_module, "app", broken)
    monkeypatch.delenv("KIMI_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["ask", "x"])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.splitlines() == ["kimi: error: internal error: RuntimeError: something inside",
                                "hint: rerun with --debug for the traceback, and please report it"]
    monkeypatch.setattr(app_module, "app", broken)
    with pytest.raises(RuntimeError):
        main(["ask", "x", "--debug"])
