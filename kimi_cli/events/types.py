"""Event values: what flows from the engine to the renderers. Frozen, plain data, no behaviour."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Why generation stopped. "end_turn": the model wrote <|im_end|>; "max_tokens": the
#: --max-new-tokens limit; "cancelled": Ctrl-C; "error": the engine failed.
StopReason = Literal["end_turn", "max_tokens", "cancelled", "error"]


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of the model's reasoning (text between the thinking markers)."""

    text: str
    #: model tokens this piece accounts for (0 when unknown); renderers sum them for the
    #: "Thought for 12.3 s · 845 tokens" line, which is printed before `Finished` arrives.
    tokens: int = 0
    #: The thinking budget closed the thinking before this piece (the line then says "(budget)").
    truncated: bool = False


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of the final answer (text after the closing thinking marker)."""

    text: str


@dataclass(frozen=True)
class Notice:
    """A side message for stderr: loading progress, budget warnings, cache reuse."""

    text: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class Usage:
    """Token counts of one turn."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    generated_tokens: int = 0
    thinking_tokens: int = 0
    #: prompt tokens whose KV cache was reused from an earlier turn (REPL), not computed again.
    reused_prompt_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one turn; `None` where a phase did not happen."""

    load_s: float | None = None
    preprocess_s: float | None = None
    first_token_s: float | None = None
    thinking_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True)
class Finished:
    """The last event of a turn: why it stopped, usage and timings."""

    stop_reason: StopReason
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    tokens_per_s: float | None = None
    #: The engine closed the thinking (`--think-budget` ran out, or 0 skipped it), not the model.
    thinking_truncated: bool = False
    #: Where the model load's seconds went, `(phase, value)` pairs (see `kimi_cli.model.phases`); a
    #: local engine's only. JSON output shows them as `timings.load_phases`.
    load_phases: tuple[tuple[str, float], ...] = ()

    def timings_record(self) -> dict[str, Any]:
        """The `timings` object of the JSON outputs: the timings, tokens/s and the load's phases."""
        record: dict[str, Any] = {**asdict(self.timings), "tokens_per_s": self.tokens_per_s}
        if self.load_phases:
            record["load_phases"] = dict(self.load_phases)
        return record


@dataclass(frozen=True)
class ErrorEvent:
    """Generation failed mid-stream; the renderer shows it and the CLI exits with `exit_code`."""

    message: str
    hint: str | None = None
    exit_code: int = 1
    #: The formatted traceback, shown only with --debug.
    detail: str | None = None


Event = ThinkingDelta | AnswerDelta | Notice | Finished | ErrorEvent
