"""`kimi warmup` and the load-time kernel warm-up hook (`kimi_cli.app.warmup`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.app.warmup import KernelWarmup, context_buckets

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("low", "context", "first", "last", "count"), [
    (1, 131072, 1024, 131072, 128),
    (32770, 131072, 33792, 131072, 96),  # `kimi ask` at the default 32768 new tokens
    (1, 4096, 1024, 4096, 4),
    (5000, 4096, 5120, 5120, 1),  # a turn longer than the context still gets its own bucket
])
def test_context_buckets(low, context, first, last, count):
    buckets = context_buckets(low, context)
    assert (buckets[0], buckets[-1], len(buckets)) == (first, last, count)


@pytest.mark.parametrize(("decoder", "device"), [("auto", "cpu"), ("plain", "cuda"), ("auto", "mps")])
def test_hook_starts_nothing_off_the_fast_path(decoder, device):
    hook = KernelWarmup(decoder)
    hook(checkpoint=None, device=device, dtype=None, fmt="bf16")  # returns before reading anything
    assert hook.job is None


def test_kimi_warmup_on_the_cpu_says_there_is_nothing_to_compile(tiny_checkpoint, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("KIMI_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "warmup", "--model", str(tiny_checkpoint)],
                          capture_output=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kimi warmup: nothing to compile: "), lines
    assert proc.stderr == b""
