"""Where kimi keeps what it can rebuild: `$XDG_CACHE_HOME/kimi` (default `~/.cache/kimi`).

Quantized checkpoints (`kimi quantize`) live under `quantized/`, compiled GPU kernels under `triton/`;
deleting the directory clears both. Pure: a function of the environment, no heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def kimi_cache(env: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/kimi`, or `~/.cache/kimi` (HOME from `env`) when it is unset or empty."""
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "kimi"
