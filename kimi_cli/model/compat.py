"""Calling transformers the way the installed version wants.

transformers renamed the cache argument of every model's `forward` from `past_key_values` to `cache`
(5.24 warns about the old name and plans to drop it in 5.40). We read the name off the signature of
the module we are about to call, once per class, so both sides of the rename work without warnings.
"""

from __future__ import annotations

import inspect
from functools import cache
from typing import Any


@cache
def _cache_name(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(module: Any, cache: Any) -> dict[str, Any]:
    """`{name: cache}` for `module(...)`, with the cache argument's name that its forward takes."""
    return {_cache_name(type(module)): cache}


def output_cache(output: Any) -> Any:
    """The cache a forward returned (`output.cache` since 5.24, `output.past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
