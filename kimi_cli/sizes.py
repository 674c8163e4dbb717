"""Sizes written by people (`24GiB`, `16GB`, `20000MiB`): parsed once, for settings and the memory plan."""

from __future__ import annotations

import re

from kimi_cli.errors import UsageError

GIB = 2**30

__all__ = ["GIB", "parse_size"]


def parse_size(text: str) -> int:
    """`24GiB`, `24G` (binary), `24GB` (decimal), `16000MiB`, `24` (GiB) -> bytes; else a usage error."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?B)?)?\s*", text, flags=re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--max-gpu-memory {text}: not a size", hint="write it like 24GiB, 16GB or 20000MiB")
    unit, suffix = (m.group(2) or "G").upper(), (m.group(3) or "").lower()
    base = 1000 if suffix == "b" else 1024
    return int(float(m.group(1)) * base ** ("KMGT".index(unit) + 1))
