"""Steering one turn's tokens: the thinking budget (forced close marker) and a grammar mask (JSON).

Both decode paths (plain and fast) hand every choice to `Steering.next`, which returns a token
that was forced (the close marker once the budget is spent) or sampled (masked by the grammar once
the thinking is closed). Every token, forced or sampled, is fed back through the decoder's cache as
the model's own would be, so the answer is conditioned on the closed thinking.

Thinking tokens are counted the way the consumer counts them: the same `ThinkingSplitter` runs here
over the same decoded text, so `--think-budget N` and the collapsed line's count agree. The close
marker is fed as the tokenizer encodes it on its own (a clean boundary: it is only forced when no
partial character or partial marker is pending, else after at most `_MAX_WAIT` more tokens).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from kimi_cli.events.thinking import ThinkingSplitter
from kimi_cli.model.facts import THINK_CLOSE, THINK_OPEN, THINKING_FORMAT

#: Most extra tokens the budget waits for a clean boundary (a character or marker completing).
_MAX_WAIT = 8


class Steering:
    """Per-turn policy: which token comes next, given the logits and a sampler."""

    def __init__(self, tokenizer: Any, *, implicit_thinking: bool, budget: int | None = None,
                 grammar: Any = None) -> None:
        from kimi_cli.model.tokenizer import StreamDecoder

        self.budget = budget
        self.grammar = grammar
        self._decoder = StreamDecoder(tokenizer)
        self._splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=implicit_thinking)
        self._close = tuple(tokenizer.encode_ordinary(THINK_CLOSE))
        self._forced: deque[int] = deque()
        self._waited = 0
        #: Whether the engine closed the thinking (the budget cut it, or skipped it with 0).
        self.cut = False
        if budget == 0 and implicit_thinking:
            self._force((*tokenizer.encode_ordinary(THINK_OPEN), *self._close))

    @property
    def active(self) -> bool:
        """Whether this turn needs steering at all (else the decoders keep their fast loops)."""
        return self.budget is not None or self.grammar is not None

    def next(self, logits: Any, sample: Callable[[Any], int]) -> int:
        """The next token: a forced one, or `sample(logits)` (masked by the grammar as needed)."""
        token = self._forced.popleft() if self._forced else self._sampled(logits, sample)
        self._accept(token)
        return token

    def _sampled(self, logits: Any, sample: Callable[[Any], int]) -> int:
        grammar = self.grammar
        if grammar is None:
            return sample(logits)
        if self._splitter.in_thinking and not self._splitter.saw_close:
            token = sample(logits)  # free text while thinking; masked only if the grammar refuses it
            if grammar.allows(token):
                return token
        grammar.mask(logits)
        return sample(logits)

    def _accept(self, token: int) -> None:
        if self.grammar is not None:
            self.grammar.consume(token)
        self._splitter.feed(self._decoder.push(token), tokens=1)
        if self.budget is None or self._forced or self._splitter.saw_close:
            return
        if self._splitter.in_thinking and self._splitter.thinking_tokens >= self.budget:
            if self._clean() or self._waited >= _MAX_WAIT:
                self._force(self._close)
            else:
                self._waited += 1

    def _clean(self) -> bool:
        """No partial UTF-8 character and no partial marker is pending: the marker starts cleanly."""
        return not self._decoder.pending and not self._splitter.holding

    def _force(self, ids: tuple[int, ...]) -> None:
        self._forced.extend(ids)
        self.cut = True
