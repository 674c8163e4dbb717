"""Split a thinking model's decoded text into thinking and answer, incrementally and purely.

Kimi-VL-A3B-Thinking-2506 writes `◁think▷ reasoning ◁/think▷ answer`. The markers are the model's
facts and come from the caller as a `ThinkingFormat` (`kimi_cli.model.facts.THINKING_FORMAT`); this
module knows only how to split on them. Each marker is several tokens, so a marker can arrive
split across chunks at any character; the splitter holds back any suffix that could still become
a marker (or a stray special token) until the next chunk decides.

Decisions, each covered by tests/test_thinking.py:

* Everything before `◁/think▷` is thinking (the issue's rule). A stream cannot know in advance
  whether a closing marker will come, so when `implicit_thinking` is true (the default, right for
  the thinking checkpoint) text is thinking from its first non-blank character, with or without
  an opening marker. Non-blank text before `◁think▷` is therefore thinking too; leading blank text
  is dropped; the opening marker itself is removed and acts as a paragraph break.
* A reply cut off before `◁/think▷` is all thinking and has no answer; the caller's
  `Finished.stop_reason` says why it stopped.
* Models that never write markers (instruct checkpoints, random test weights): construct the
  splitter with `implicit_thinking=False`; then text is answer unless the reply opens with
  `◁think▷`. After a stream, `had_markers` tells whether either marker was seen, so a caller that
  guessed wrong can say so.
* Marker text after the answer began is removed; it is never meant for the reader.
* Stray special tokens that a decoder left in (`<|im_end|>`, `[EOS]`, ...) are removed anywhere.
* Whitespace at the start and end of each section is trimmed, so renderers never see the blank
  lines the model writes around its markers. Trailing whitespace is therefore held back until more
  text of the same section arrives.
* A possible partial marker still held at `finish()` is dropped when it is `◁` or two or more
  characters long (a marker cut off by the token limit); a lone `<` or `[` is kept as text.

Token accounting: `feed(text, tokens=n)` attributes the chunk's `n` tokens to thinking when the
splitter was in thinking when the chunk began (so the closing marker's tokens count as thinking) or
the chunk opened the thinking; they ride on the next `ThinkingDelta` (an
empty-text delta at the switch or at the end if none follows), so that renderers can sum them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kimi_cli.events.types import AnswerDelta, ThinkingDelta

#: `<|im_end|>`, `<|im_assistant|>`, `<|media_pad|>`, `<|reserved_token_7|>` ...
_STRAY_ANGLE = r"<\|[A-Za-z0-9_]{1,40}\|>"
#: Prefixes of `_STRAY_ANGLE` that a later chunk could still complete.
_PARTIAL_ANGLE_RE = re.compile(r"<(?:\|(?:[A-Za-z0-9_]{1,40}\|?)?)?")
_MAX_ANGLE = 44  # longest `_STRAY_ANGLE` match


@dataclass(frozen=True)
class ThinkingFormat:
    """A model's thinking markers and the literal special tokens that may leak into its text.

    The values are the model's facts (`kimi_cli.model.facts.THINKING_FORMAT` for Kimi-VL); this
    module only knows how to split on them. Special tokens of the `<|name|>` shape are always removed.
    """

    open_marker: str
    close_marker: str
    literal_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.open_marker or not self.close_marker:
            raise ValueError("thinking markers must be non-empty")

    @property
    def literals(self) -> tuple[str, ...]:
        """Every fixed string the splitter matches: the markers first, then the literal tokens."""
        return (self.open_marker, self.close_marker, *self.literal_tokens)


Phase = Literal["start", "thinking", "answer"]
Split = ThinkingDelta | AnswerDelta


def _partial_start(buf: str, literals: tuple[str, ...], max_hold: int) -> int:
    """Index where a suffix of `buf` that could still grow into a token begins (len if none)."""
    for i in range(max(0, len(buf) - max_hold), len(buf)):
        tail = buf[i:]
        if any(lit.startswith(tail) for lit in literals) or _PARTIAL_ANGLE_RE.fullmatch(tail):
            return i
    return len(buf)


class ThinkingSplitter:
    """Incremental splitter: `feed` decoded chunks, then `finish` once; both return deltas."""

    def __init__(self, fmt: ThinkingFormat, implicit_thinking: bool = True) -> None:
        self.fmt = fmt
        self.implicit_thinking = implicit_thinking
        self._token_re = re.compile("|".join([*map(re.escape, fmt.literals[:2]), _STRAY_ANGLE,
                                              *map(re.escape, fmt.literals[2:])]))
        self._max_hold = max(_MAX_ANGLE, *map(len, fmt.literals))
        self.phase: Phase = "start"
        self.saw_open = False
        self.saw_close = False
        self.thinking_tokens = 0
        self._buf = ""
        self._pending_ws = ""  # trailing whitespace of the current section, held back
        self._section_started = False  # has the current section emitted text yet?
        self._unreported_tokens = 0
        self._out: list[Split] = []

    @property
    def had_markers(self) -> bool:
        """Whether the reply contained `◁think▷` or `◁/think▷`."""
        return self.saw_open or self.saw_close

    @property
    def holding(self) -> bool:
        """Whether text is held back because it could still grow into a marker or special token."""
        return bool(self._buf)

    @property
    def in_thinking(self) -> bool:
        """Whether text arriving now would be thinking."""
        return self.phase == "thinking" or (self.phase == "start" and self.implicit_thinking)

    def feed(self, text: str, tokens: int = 0) -> list[Split]:
        """Take the next decoded chunk (of `tokens` model tokens); return the deltas it completes."""
        thinking_before = self.in_thinking
        if thinking_before:
            self._count(tokens)
        buf = self._buf + text
        while (match := self._token_re.search(buf)) is not None:
            self._text(buf[: match.start()])
            self._token(match.group())
            buf = buf[match.end() :]
        cut = _partial_start(buf, self.fmt.literals, self._max_hold)
        self._text(buf[:cut])
        self._buf = buf[cut:]
        if not thinking_before and self.phase == "thinking":
            self._count(tokens)  # the chunk opened the thinking
        return self._drain()

    def finish(self) -> list[Split]:
        """End of the reply: flush held text (see the module notes) and unreported tokens."""
        held, self._buf = self._buf, ""
        if len(held) == 1 and not any(m.startswith(held) for m in self.fmt.literals[:2]):
            self._text(held)
        self._pending_ws = ""
        self._report_tokens()
        return self._drain()

    def _drain(self) -> list[Split]:
        """Return the collected deltas, merging neighbours of the same kind."""
        merged: list[Split] = []
        for delta in self._out:
            prev = merged[-1] if merged else None
            if isinstance(delta, ThinkingDelta) and isinstance(prev, ThinkingDelta):
                merged[-1] = ThinkingDelta(prev.text + delta.text, prev.tokens + delta.tokens)
            elif isinstance(delta, AnswerDelta) and isinstance(prev, AnswerDelta):
                merged[-1] = AnswerDelta(prev.text + delta.text)
            else:
                merged.append(delta)
        self._out = []
        return merged

    def _token(self, token: str) -> None:
        """React to a complete marker or stray token."""
        opener, closer = self.fmt.open_marker, self.fmt.close_marker
        if token == opener and self.phase != "answer":
            self.saw_open = True
            if self.phase == "start":
                self._enter("thinking")
            elif self._section_started:
                # Text came before the opener: keep it apart from what follows.
                self._pending_ws = self._pending_ws or "\n\n"
        elif token == closer and self.phase != "answer":
            self.saw_close = True
            self._report_tokens()
            self._enter("answer")
        elif token == opener:
            self.saw_open = True
        elif token == closer:
            self.saw_close = True

    def _enter(self, phase: Phase) -> None:
        """Start a new section: its leading blank text is dropped, like its predecessor's tail."""
        self.phase = phase
        self._pending_ws = ""
        self._section_started = False

    def _text(self, text: str) -> None:
        """Emit plain text in the current section, trimming the section's edges."""
        if not text:
            return
        if not self._section_started:
            text = text.lstrip()
            if not text:
                return
            if self.phase == "start":
                self.phase = "thinking" if self.implicit_thinking else "answer"
        body = text.rstrip()
        if body:
            self._emit(self._pending_ws + body)
            self._pending_ws = ""
            self._section_started = True
        self._pending_ws += text[len(body) :]

    def _emit(self, text: str) -> None:
        if self.phase == "thinking":
            self._out.append(ThinkingDelta(text, self._unreported_tokens))
            self._unreported_tokens = 0
        else:
            self._out.append(AnswerDelta(text))

    def _count(self, tokens: int) -> None:
        self.thinking_tokens += tokens
        self._unreported_tokens += tokens

    def _report_tokens(self) -> None:
        """Hand on thinking tokens that no thinking text has carried yet."""
        if self._unreported_tokens:
            self._out.append(ThinkingDelta("", self._unreported_tokens))
            self._unreported_tokens = 0


def split_text(text: str, fmt: ThinkingFormat, implicit_thinking: bool = True) -> tuple[str, str]:
    """Split a whole reply at once: `(thinking, answer)`. Used for history and tests."""
    splitter = ThinkingSplitter(fmt, implicit_thinking)
    deltas = splitter.feed(text) + splitter.finish()
    thinking = "".join(d.text for d in deltas if isinstance(d, ThinkingDelta))
    answer = "".join(d.text for d in deltas if isinstance(d, AnswerDelta))
    return thinking, answer
