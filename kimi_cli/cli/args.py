"""Pure parsing of `kimi ask` positional arguments and piped stdin into files and a prompt."""

from __future__ import annotations

from collections.abc import Callable

from kimi_cli.app.inputs import MEDIA_SUFFIXES, looks_like_file
from kimi_cli.errors import UsageError

__all__ = ["MEDIA_SUFFIXES", "compose_prompt", "looks_like_file", "split_args"]


def split_args(args: list[str], exists: Callable[[str], bool]) -> tuple[list[str], str | None]:
    """Files first, prompt last: the last argument is the prompt unless it looks like a file."""
    if not args:
        return [], None
    if looks_like_file(args[-1], exists):
        return list(args), None
    return list(args[:-1]), args[-1]


def compose_prompt(prompt: str | None, piped: str | None) -> str:
    """The user's text: piped text comes first as context, then the prompt argument.

    `git diff | kimi ask "Review this"` sends the diff, a blank line, then "Review this".
    With no prompt argument, the piped text is the prompt.
    """
    piped = (piped or "").strip("\n")
    if prompt is not None and prompt.strip():
        return f"{piped}\n\n{prompt}" if piped.strip() else prompt
    if piped.strip():
        return piped
    raise UsageError("no prompt given", hint='put the prompt last: kimi ask photo.jpg "What is this?" '
                     "(or pipe it in on stdin)")
