"""Turn an OpenAI-compatible chat stream (SSE chunks, already JSON-decoded) into kimi events. Pure.

Three shapes reach us, and all end up as the same `ThinkingDelta`/`AnswerDelta` events:

* a separate reasoning field in each delta, named `reasoning_content` (SGLang, older vLLM, and
  `kimi serve`, which sends both names) or `reasoning` (current vLLM);
* no reasoning field: the model's raw text in `content` with inline `◁think▷ … ◁/think▷` markers
  (vLLM without a reasoning parser; none of vLLM's parsers knows Kimi-VL's multi-token markers).

Either way the text goes through the one `ThinkingSplitter`: reasoning-field text is fed as if it
were between the markers, so whitespace trimming and stray-token removal are the same for every
backend. Token counts: a chunk carrying reasoning counts one token (servers send about one token
per chunk) until the final `usage` (with `completion_tokens_details.reasoning_tokens`) gives the
real numbers for `Finished`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kimi_cli.events.thinking import ThinkingSplitter
from kimi_cli.events.types import Event, StopReason, Usage
from kimi_cli.model.facts import THINKING_FORMAT

REASONING_FIELDS = ("reasoning_content", "reasoning")
_FINISH = {"stop": "end_turn", "length": "max_tokens", "eos": "end_turn", "abort": "cancelled"}


@dataclass
class StreamState:
    """Feed decoded chunks with `feed`; call `finish` once at the end of the stream."""

    implicit_thinking: bool = False
    splitter: ThinkingSplitter = field(init=False)
    stop: StopReason | None = None
    usage: dict[str, Any] | None = None
    chunks: int = 0
    _field_thinking: bool = False  # inside reasoning-field text (the open marker was fed)

    def __post_init__(self) -> None:
        self.splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=self.implicit_thinking)

    @property
    def saw_content(self) -> bool:
        """Whether any text (reasoning or answer) has arrived yet."""
        return self.splitter.phase != "start"

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """Events completed by one chunk. A chunk carrying `error` raises `StreamError`."""
        if isinstance(chunk.get("error"), (dict, str)):
            raise StreamError(error_message(chunk))
        self.chunks += 1
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        out: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            out.extend(self._delta(choice.get("delta") or choice.get("message") or {}))
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.stop = _FINISH.get(reason, "end_turn")
        return out

    def _delta(self, delta: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        reasoning = next((delta[k] for k in REASONING_FIELDS if isinstance(delta.get(k), str) and delta[k]), None)
        if reasoning is not None:
            if not self._field_thinking:
                self._field_thinking = True
                out.extend(self.splitter.feed(THINKING_FORMAT.open_marker))
            out.extend(self.splitter.feed(reasoning, tokens=1))
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._field_thinking:
                self._field_thinking = False
                out.extend(self.splitter.feed(THINKING_FORMAT.close_marker))
            out.extend(self.splitter.feed(content, tokens=1 if self.splitter.in_thinking else 0))
        return out

    def finish(self) -> list[Event]:
        """Flush the splitter (held text, unreported thinking tokens)."""
        return list(self.splitter.finish())

    def final_usage(self, fallback_generated: int = 0) -> Usage:
        """Usage from the server's `usage` object, else what the stream itself showed."""
        u = self.usage or {}
        details = u.get("completion_tokens_details") or {}
        prompt_details = u.get("prompt_tokens_details") or {}
        # OpenAI and vLLM: completion_tokens_details.reasoning_tokens; SGLang: usage.reasoning_tokens.
        thinking = _int(details.get("reasoning_tokens"), _int(u.get("reasoning_tokens"), self.splitter.thinking_tokens))
        return Usage(prompt_tokens=_int(u.get("prompt_tokens"), 0),
                     image_tokens=_int(prompt_details.get("image_tokens"), 0),
                     generated_tokens=_int(u.get("completion_tokens"), fallback_generated),
                     thinking_tokens=thinking,
                     reused_prompt_tokens=_int(prompt_details.get("cached_tokens"), 0))


class StreamError(Exception):
    """The server reported an error inside the stream."""


def error_message(body: Any) -> str:
    """The message of an OpenAI-style error body (`{"error": {...}}` or vLLM's `{"object": "error"}`)."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if isinstance(msg, str) and msg.strip():
                return msg.strip().splitlines()[0][:300]
        if isinstance(err, str) and err.strip():
            return err.strip().splitlines()[0][:300]
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail[:300]
    return "no error message"


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
