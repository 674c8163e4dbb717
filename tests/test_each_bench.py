"""benchmarks/each_bench.py runs end to end on the tiny checkpoint (a smoke test; numbers are the GPU's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_each_bench_smoke(tiny_checkpoint, tmp_path):
    out = tmp_path / "each.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "each_bench.py"), "--model", str(tiny_checkpoint),
                           "-n", "2", "--size", "64", "--max-new-tokens", "8", "--repeats", "1", "--separate-n", "1",
                           "--json", str(out)],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["local"]["each_s"] > 0 and report["local"]["separate_s"] > 0
    assert report["local"]["separate_measured"] == 1
    assert report["constrained"]["free_tokens_per_s"] > 0 and report["constrained"]["schema_tokens_per_s"] > 0
