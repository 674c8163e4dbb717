"""`kimi warmup`: compile the GPU kernels and capture a decode step now, so no later run waits for them."""

from __future__ import annotations

import sys

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app


@app.command()
@o.with_settings("warmup")
def warmup(flags: dict[str, object] | None = None) -> None:
    """Load the model, compile the fast path's GPU kernels for every context length, and capture and
    replay one decode step; print what it did. Kernels are kept in kimi's cache (or TRITON_CACHE_DIR).

    A machine's first `kimi ask` otherwise compiles them while the weights load. Example:
    kimi warmup --quantize fp8
    """
    from kimi_cli.app.warmup import run_warmup
    from kimi_cli.config import load_settings

    sys.stdout.write(run_warmup(load_settings(flags or {})) + "\n")
