"""Where Triton keeps kimi's compiled kernels, and whether this machine has compiled them already.

Triton caches compiled kernels on disk (`TRITON_CACHE_DIR`, else `~/.triton/cache`). Unless the user
chose a directory, kimi points it at `<kimi cache>/triton` (see `kimi_cli.cachedir`), so the kernels
persist with kimi's other rebuildable files and go when that cache is cleared. Triton reads the
variable when it first compiles, so setting it any time before that works.

A marker file per (kimi version, Triton version, GPU, weight format), written after a successful
warm-up, answers "must this run compile?" without asking Triton: a missing marker means a first run,
and stderr says once that the kernels are being compiled. Pure: no torch, no Triton.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

from kimi_cli.cachedir import kimi_cache

ENV = "TRITON_CACHE_DIR"
MARKERS = "kimi-warm"


def triton_cache_dir(env: MutableMapping[str, str]) -> Path:
    """`<kimi cache>/triton`: where kimi asks Triton to keep its kernels."""
    return kimi_cache(env) / "triton"


def use_kimi_cache(env: MutableMapping[str, str] = os.environ) -> Path:
    """Point Triton at kimi's kernel cache unless `TRITON_CACHE_DIR` is set; return the directory in use."""
    if not env.get(ENV):
        env[ENV] = str(triton_cache_dir(env))
    return Path(env[ENV])


def marker_key(kimi_version: str, triton_version: str, gpu: str, weight_format: str) -> str:
    """A file name for one (kimi, Triton, GPU, format) combination: other characters become `_`."""
    raw = "-".join((kimi_version, triton_version, gpu, weight_format))
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", raw).strip("_")


def is_warm(cache: Path, key: str) -> bool:
    """Whether a warm-up for `key` finished in `cache` before (then nothing needs compiling)."""
    return (cache / MARKERS / key).is_file()


def mark_warm(cache: Path, key: str) -> None:
    """Record that the kernels for `key` are in `cache` (best effort: a read-only cache just stays cold)."""
    try:
        (cache / MARKERS).mkdir(parents=True, exist_ok=True)
        (cache / MARKERS / key).write_text("ok\n")
    except OSError:
        pass
