"""The memory planner: table-driven choices for `--quantize auto`, sizes, and the "nothing fits" line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kimi_cli.errors import ModelLoadError, UsageError
from kimi_cli.model.memory import (
    GIB,
    Need,
    choose_format,
    kv_bytes,
    make_plan,
    weight_bytes,
)
from kimi_cli.model.synthetic import get_preset
from kimi_cli.sizes import parse_size

FULL = get_preset("full")
#: The default request plan: 16K image tokens + 32K new tokens + 1K of text; a 1792x1792 image.
DEFAULT = Need(context_tokens=16384 + 32768 + 1024, image_patches=16384)
HOPPER, AMPERE = (9, 0), (8, 6)


def test_kv_cache_is_the_mla_latent():
    assert kv_bytes(FULL.text, 1) == 31104
    assert kv_bytes(FULL.text, 32768) == 31104 * 32768


@pytest.mark.parametrize(("fmt", "low", "high"), [
    ("bf16", 30.0, 31.0),   # measured on the H200: 30.7 GiB
    ("int8", 16.0, 17.0),
    ("fp8", 16.0, 17.0),
    ("int4", 9.0, 10.0),
])
def test_full_size_weights(fmt, low, high):
    assert low * GIB < weight_bytes(FULL.text, FULL.vision, fmt) < high * GIB


@pytest.mark.parametrize(("budget_gib", "capability", "need", "picked"), [
    (80, HOPPER, DEFAULT, "bf16"),
    (40, HOPPER, DEFAULT, "bf16"),
    (34, HOPPER, DEFAULT, "fp8"),       # bf16 would fit, but without room to spare
    (24, HOPPER, DEFAULT, "fp8"),
    (24, AMPERE, DEFAULT, "int8"),      # no fp8 below compute capability 8.9
    (24, None, DEFAULT, "fp8"),
    (16, HOPPER, DEFAULT, "int4"),
    (16, AMPERE, Need(32768, 16384), "int4"),
    (20, HOPPER, Need(4096, 0), "fp8"),
    (12, HOPPER, Need(8192, 16384), "int4"),
])
def test_auto_picks(budget_gib, capability, need, picked):
    plan, reason = choose_format(FULL.text, FULL.vision, need, budget_gib * GIB, capability)
    assert plan.format == picked and plan.fits
    assert reason.startswith(picked)


def test_nothing_fits_is_one_line_with_the_numbers_and_what_would_fit():
    with pytest.raises(ModelLoadError) as info:
        choose_format(FULL.text, FULL.vision, DEFAULT, 12.5 * GIB, HOPPER)
    err = info.value
    assert err.exit_code == 4 and "\n" not in err.message
    assert "12.5 GiB" in err.message and "int4" in err.message and "bf16" in err.message
    assert "int4 fits" in err.hint and "tokens of context" in err.hint
    with pytest.raises(ModelLoadError) as info:
        choose_format(FULL.text, FULL.vision, DEFAULT, 6 * GIB, HOPPER)
    assert "int4 needs at least" in info.value.hint


def test_chunked_prefill_bounds_the_activation_peak():
    short = make_plan(FULL.text, FULL.vision, "int8", Need(8192), None).activations
    long = make_plan(FULL.text, FULL.vision, "int8", Need(131072), None).activations
    assert long < 3 * short  # grows with the expanded cache only, not with the prompt's activations


@pytest.mark.parametrize(("text", "size"), [
    ("24GiB", 24 * GIB), ("24G", 24 * GIB), ("24", 24 * GIB), ("24GB", 24 * 10**9),
    ("16000MiB", 16000 * 2**20), ("1.5gib", int(1.5 * GIB)), (" 8 GiB ", 8 * GIB),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "0", "-3G", "24XB", "GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.slow
def test_dry_run_shows_the_memory_plan(tiny_checkpoint):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "ask", "--model", str(tiny_checkpoint), "hi",
                           "--dry-run", "--quantize", "int4", "--max-gpu-memory", "16GiB"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "memory plan (int4):" in proc.stdout and "KV cache" in proc.stdout
    assert "16.0 GiB  (fits)" in proc.stdout


@pytest.mark.parametrize(("n", "chunk", "expected"), [
    (1, 4096, [(0, 1)]),
    (4096, 4096, [(0, 4096)]),
    (4147, 4096, [(0, 4147)]),  # a 1792x1792 image and its question: one forward, not two
    (5119, 4096, [(0, 5119)]),
    (5120, 4096, [(0, 4096), (4096, 5120)]),
    (12300, 4096, [(0, 4096), (4096, 8192), (8192, 12300)]),
    (37, 8, [(0, 8), (8, 16), (16, 24), (24, 32), (32, 37)]),
    (33, 8, [(0, 8), (8, 16), (16, 24), (24, 33)]),
])
def test_prefill_chunks(n, chunk, expected):
    from kimi_cli.model.memory import prefill_chunks

    chunks = prefill_chunks(n, chunk)
    assert chunks == expected
    assert max(hi - lo for lo, hi in chunks) < chunk + chunk // 4
