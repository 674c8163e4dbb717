"""Attributes of transformers replaced for the length of a block: the fast path's kernel patches.

`Swap(targets)` holds a list of (owner, attribute name, replacement), made by `targets()` when the
first block enters (so transformers is imported only then). Entering saves the originals and puts the
replacements in; leaving the outermost block puts the originals back. It is re-entrant and
thread-safe; `original(owner, name)` gives what the attribute was before the swap, for a replacement
that hands some calls back to transformers' own code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Target = tuple[Any, str, Any]


class Swap:
    """Re-entrant replacement of `targets()`' attributes (module docstring)."""

    def __init__(self, targets: Callable[[], list[Target]]) -> None:
        self._targets = targets
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[Target] = []

    @contextmanager
    def active(self) -> Iterator[None]:
        """The replacements are in place inside the block."""
        with self._lock:
            if self._depth == 0:
                targets = self._targets()
                self._saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
                for owner, name, new in targets:
                    setattr(owner, name, new)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for owner, name, old in self._saved:
                        setattr(owner, name, old)
                    self._saved = []

    def original(self, owner: Any, name: str) -> Any:
        """`owner.name` as it was before the swap (the attribute itself when nothing is swapped)."""
        with self._lock:
            for o, n, old in self._saved:
                if o is owner and n == name:
                    return old
        return getattr(owner, name)
