"""Events the engine yields and renderers consume, and the pure thinking/answer splitter."""

from __future__ import annotations

from kimi_cli.events.types import (
    AnswerDelta,
    ErrorEvent,
    Event,
    Finished,
    Notice,
    StopReason,
    ThinkingDelta,
    Timings,
    Usage,
)

__all__ = [
    "AnswerDelta",
    "ErrorEvent",
    "Event",
    "Finished",
    "Notice",
    "StopReason",
    "ThinkingDelta",
    "Timings",
    "Usage",
]
