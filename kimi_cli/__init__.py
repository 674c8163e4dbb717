"""kimi: a terminal assistant for Moonshot AI's Kimi-VL-A3B-Thinking-2506, run locally."""

from __future__ import annotations

__version__ = "0.1.0"
DEFAULT_MODEL = "moonshotai/Kimi-VL-A3B-Thinking-2506"
