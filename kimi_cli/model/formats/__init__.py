"""Weight formats, one module each: bf16 (as published), int8, fp8 and int4.

Each module's `FORMAT` says whether it applies to a device (`info.applies`), how many bytes a matrix
takes (`bytes_for`), how to quantize and dequantize a tensor, and which fast kernels it has. Add a
format by adding a module here and a line to `_MODULES`. Nothing here imports torch at import time.
"""

from __future__ import annotations

from importlib import import_module

from kimi_cli.model.formats.base import HEAD, HEAD_FORMAT, FormatInfo, WeightFormat, head_format, is_quantized

__all__ = ["FORMAT_NAMES", "HEAD", "HEAD_FORMAT", "FormatInfo", "WeightFormat", "get_format", "head_format",
           "is_quantized"]

_MODULES = {"bf16": "bf16", "int8": "int8", "fp8": "fp8", "int4": "int4"}
FORMAT_NAMES = tuple(_MODULES)


def get_format(name: str) -> WeightFormat:
    """The format called `name` (KeyError for an unknown one)."""
    return import_module(f"{__name__}.{_MODULES[name]}").FORMAT
