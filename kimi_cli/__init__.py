"""kimi: a terminal assistant for Moonshot AI's Kimi-VL-A3B-Thinking-2506, run locally.

The Python API is `kimi_cli.Assistant` (see `kimi_cli.api`).
"""

from __future__ import annotations

__version__ = "0.1.0"
DEFAULT_MODEL = "moonshotai/Kimi-VL-A3B-Thinking-2506"

__all__ = ["DEFAULT_MODEL", "Assistant", "Reply", "__version__"]


def __getattr__(name: str) -> object:
    """`Assistant` and `Reply` are imported on first use, so `import kimi_cli` stays light."""
    if name in ("Assistant", "Reply"):
        from kimi_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'kimi_cli' has no attribute {name!r}")
