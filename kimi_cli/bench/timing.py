"""Clocks, GPU memory peaks and the environment record shared by the benchmark pieces."""

from __future__ import annotations

import datetime as _dt
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

GIB = 1024**3


def sync(device: Any = None) -> None:
    """Wait for the device's queued work (a no-op on a CPU)."""
    import torch

    if torch.cuda.is_available() and (device is None or str(device).startswith("cuda")):
        torch.cuda.synchronize()


def now(device: Any = None) -> float:
    """Host clock after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return float(statistics.median(values))


def reset_peak() -> None:
    """Start a new GPU memory peak (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    """Peak GPU memory allocated by this process since the last reset, in GiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / GIB


def free_cuda() -> None:
    """Return cached blocks to the driver so that one engine's buffers do not inflate the next peak."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Device name, library versions, date and the command line, for the JSON record."""
    import torch
    import transformers

    gpu = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if gpu else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(argv if argv is not None else sys.argv),
        "device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
        "gpu_memory_gib": round(props.total_memory / GIB, 1) if props else None,
        "gpu_sms": props.multi_processor_count if props else None,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": _version("triton"),
        "flash_attn": _version("flash-attn"),
        "host": platform.node(),
    }
