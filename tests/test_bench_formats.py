"""`kimi bench --quantize`: the formats side by side in one run (CPU harness on the tiny checkpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from kimi_cli.bench.format_cli import parse_formats
from kimi_cli.bench.formats import FormatRun, fidelity, formats_markdown
from kimi_cli.errors import UsageError


def test_parse_formats():
    assert parse_formats("bf16, int8,int8,fp8") == ("bf16", "int8", "fp8")
    with pytest.raises(UsageError):
        parse_formats("int3")


def test_fidelity_of_identical_and_different_logits():
    ref = torch.log_softmax(torch.randn(5, 11), dim=-1)
    assert fidelity(ref, ref) == (pytest.approx(0.0, abs=1e-7), 1.0)
    kl, top1 = fidelity(ref, torch.log_softmax(-ref, dim=-1))
    assert kl > 0.1 and top1 == 0.0


def test_a_format_measured_without_bf16_is_labelled_against_itself():
    runs = [FormatRun("int4", kl=0.07, top1=0.33, against="itself")]
    table = formats_markdown(runs, (512,))
    kl_row = next(line for line in table.splitlines() if line.startswith("| KL"))
    assert "0.07000 (vs itself: its noise floor)" in kl_row
    both = formats_markdown([FormatRun("bf16", kl=0.01, top1=0.9, against="itself"),
                             FormatRun("int8", kl=0.02, top1=0.8)], (512,))
    assert "vs itself" not in both  # bf16's own row is the floor the header names; int8 is against bf16


@pytest.mark.slow
def test_bench_measures_every_format_in_one_run(tiny_checkpoint, tmp_path):
    out = tmp_path / "formats.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "bench", "--model", str(tiny_checkpoint),
                           "--quantize", "int8,bf16,int4", "--contexts", "32", "--tokens", "3",
                           "--image-size", "56", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("| metric | bf16 | int8 | int4 |")
    runs = json.loads(out.read_text())
    assert [r["format"] for r in runs] == ["bf16", "int8", "int4"]
    assert all(r["load_s"] > 0 and r["ttft_ms"] > 0 and r["decode"]["32"] > 0 for r in runs)
    assert all(len(r["ttft_turns_ms"]) == 3 and r["ttft_ms"] == sorted(r["ttft_turns_ms"])[1] for r in runs)
    assert "| TTFT ms (image + question, warm, median of 3) |" in proc.stdout
    assert runs[1]["kl"] < runs[2]["kl"]
    assert [r["against"] for r in runs] == ["itself", "bf16", "bf16"]
