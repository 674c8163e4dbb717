"""examples/pipeline.sh runs as written, on the fitted tiny-thinking checkpoint, with clean lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.model.fitted import FITTED_ANSWER

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pipeline_example_prints_clean_lines(thinking_checkpoint, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kimi = bin_dir / "kimi"
    kimi.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kimi_cli "$@"\n')
    kimi.chmod(0o755)
    env = {**os.environ, "KIMI_MODEL": str(thinking_checkpoint), "KIMI_TEMPERATURE": "0", "HF_HUB_OFFLINE": "1",
           "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", str(ROOT / "examples" / "pipeline.sh")], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == f"caption: {FITTED_ANSWER}"
    pngs = sorted(p.name for p in (ROOT / "examples").glob("*.png"))
    assert lines[-len(pngs):] == [f"{name}: {FITTED_ANSWER}" for name in pngs]
