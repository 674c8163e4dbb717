"""File paths typed at the prompt: `@path` mentions in a message, and Tab completion.

A mention is `@` at the start of a word followed by a path: `@cat.png`, `@~/shots/a.png`,
`@"my file.png"`, `@my\\ file.png`, `@report.pdf:1-3`. Quoting follows the shell, so the same file
name can be typed after `/attach` too. Completion offers files and folders after `/attach ` and
after `@`, quoting names that contain spaces and keeping a typed `~` as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from kimi_cli.app.inputs import MEDIA_SUFFIXES
from kimi_cli.errors import UsageError

_MENTION = re.compile(r"""(?<!\S)@("(?:[^"\\]|\\.)*"|'[^']*'|(?:[^\s\\]|\\.)+)""")
_TRAILING_PUNCT = "?!.,;:)]}'\""
_NEEDS_QUOTES = re.compile(r"""[\s"'\\]""")


def resolve_spec(text: str) -> str:
    """`~` expanded and the path made absolute, keeping a `:1-3` page selection after it."""
    from kimi_cli.media.sources import split_spec

    spec = split_spec(os.path.expanduser(text))
    path = os.path.abspath(spec.path)
    return f"{path}:{spec.pages}" if spec.pages else path


def spec_is_file(text: str) -> bool:
    """Whether `text` (a path, maybe with a page selection) names an existing file."""
    from kimi_cli.media.sources import split_spec

    return os.path.isfile(split_spec(os.path.expanduser(text)).path)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    return re.sub(r"\\(.)", r"\1", raw)


def extract_mentions(text: str, is_file: Callable[[str], bool] = spec_is_file) -> tuple[list[str], str]:
    """The files a message mentions with `@` (as typed, unquoted) and the message without the `@`s.

    `@word` that names no file stays text (a handle, an e-mail), unless it was quoted or ends like
    a media file, which surely meant a file: then it is an error. Trailing punctuation is not part
    of the path (`What is in @cat.png?`).
    """
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        raw = match.group(1)
        quoted = raw[0] in "\"'"
        candidates = [raw] if quoted else [raw, raw.rstrip(_TRAILING_PUNCT)]
        for cand in candidates:
            path = _unquote(cand)
            if path and is_file(path):
                found.append(path)
                return path + raw[len(cand):]
        path = _unquote(raw)
        if quoted or path.lower().endswith(MEDIA_SUFFIXES):
            raise UsageError(f"@{path}: no such file", hint="Tab after @ completes file names")
        return match.group(0)

    cleaned = _MENTION.sub(replace, text)
    return found, cleaned


@dataclass(frozen=True)
class Target:
    """What the word at the cursor asks to complete: `raw` (replaced whole), its path so far."""

    raw: str
    value: str
    quote: str | None  # the quote the user opened, if any
    mention: bool  # an `@path` inside a message (the completion keeps the `@`)


def _word_start(text: str) -> int:
    """Index where the last (possibly unfinished) shell-style word of `text` starts."""
    start, quote, i = 0, None, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                i += 1
        elif char == "\\":
            i += 1
        elif char in "\"'":
            quote = char
        elif char.isspace():
            start = i + 1
        i += 1
    return start


def completion_target(text: str) -> Target | None:
    """The path being typed at the end of `text`, after `/attach ` or after `@`; else None."""
    start = _word_start(text)
    raw = text[start:]
    attach = re.match(r"\s*/attach\s", text, re.IGNORECASE) is not None
    mention = raw.startswith("@")
    if not (attach or mention):
        return None
    body = raw[1:] if mention else raw
    quote = body[0] if body[:1] in ("'", '"') else None
    value = body[1:] if quote else body
    if quote and value.endswith(quote):
        value = value[:-1]
    if quote != "'":
        value = re.sub(r"\\(.)", r"\1", value)
    return Target(raw, value, quote, mention)


def path_candidates(value: str) -> list[tuple[str, bool]]:
    """Paths that complete `value`, written as typed (a leading `~` kept), and whether each is a folder."""
    if value.startswith("~") and "/" not in value:
        return [("~/", True)] if value == "~" else []
    expanded = os.path.expanduser(value)
    folder, prefix = os.path.split(expanded)
    typed_folder = value[: len(value) - len(prefix)]
    try:
        entries = list(os.scandir(folder or "."))
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        out.append((typed_folder + entry.name + ("/" if is_dir else ""), is_dir))
    return sorted(out)


def quote_path(path: str, is_dir: bool, quote: str | None) -> str:
    """`path` ready to type: quoted when it (or the user) needs it; a folder's quote left open."""
    if quote is None and not _NEEDS_QUOTES.search(path):
        return path
    if quote != "'" or "'" in path:
        quote = '"'
        path = path.replace("\\", "\\\\").replace('"', '\\"')
    return quote + path + ("" if is_dir else quote)


class PathCompleter(Completer):
    """Completes file names after `/attach ` and `@`, and command names after a leading `/`."""

    def __init__(self, commands: Iterable[str] = ()) -> None:
        self.commands = sorted(commands)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions for the text before the cursor."""
        text = document.text_before_cursor
        if re.fullmatch(r"/\w*", text):
            for name in self.commands:
                if name.startswith(text[1:]):
                    yield Completion("/" + name, start_position=-len(text))
            return
        target = completion_target(text)
        if target is None:
            return
        for path, is_dir in path_candidates(target.value):
            typed = ("@" if target.mention else "") + quote_path(path, is_dir, target.quote)
            shown = os.path.basename(path.rstrip("/")) + ("/" if is_dir else "")
            yield Completion(typed, start_position=-len(target.raw), display=shown)
