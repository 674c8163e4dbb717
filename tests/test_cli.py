"""`kimi` end to end in subprocesses, on the tiny synthetic checkpoint: output, exit codes, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAT = str(ROOT / "examples" / "chelsea.png")


def kimi(*args: str, stdin: bytes | None = b"", env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m kimi_cli ARGS` with stdin a pipe (never a terminal)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full_env.pop("KIMI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], input=stdin, capture_output=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The `kimi: error:` line; asserts it is the only one and no traceback was printed."""
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("kimi: error:")]
    assert len(lines) == 1, err
    assert "hint:" in err, err
    return lines[0]


@pytest.mark.slow
def test_ask_runs_and_is_reproducible(tiny_checkpoint):
    args = ("ask", CAT, "Describe it.", "--model", str(tiny_checkpoint), "--max-new-tokens", "16", "--seed", "0")
    first, second = kimi(*args), kimi(*args)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.strip()
    assert first.stdout == second.stdout
    assert b"\x1b[" not in first.stdout  # stdout is a pipe: no escape codes


@pytest.mark.slow
def test_prompt_from_stdin(tiny_checkpoint):
    proc = kimi("ask", "--model", str(tiny_checkpoint), "-n", "4", "--seed", "1", stdin=b"What is 2+2?")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip()


@pytest.mark.slow
def test_binary_image_on_stdin(tiny_checkpoint):
    proc = kimi("ask", "-", "What is this?", "--model", str(tiny_checkpoint), "-n", "4", "--format", "json",
                stdin=Path(CAT).read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert b'"image_tokens"' in proc.stdout


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("ask", "missing.png", "What?"), 3, "missing.png"),
    (("ask", "README.md", "What?"), 3, "README.md"),
    (("ask", CAT, "What?", "--model", "/nonexistent/model"), 4, "/nonexistent/model"),
    (("ask", CAT), 2, "no prompt"),
    (("ask", CAT, "What?", "--format", "xml"), 2, "--format"),
    (("ask", CAT, "What?", "--no-such-option"), 2, "no-such-option"),
    (("ask", CAT, "What?", "--temperature", "hot"), 2, "temperature"),
])
def test_errors_are_one_line_with_exit_code(args, code, needle):
    proc = kimi(*args)
    assert proc.returncode == code, proc.stderr.decode()
    assert needle in one_error_line(proc)
    assert proc.stdout == b""


@pytest.mark.slow
def test_unreachable_hub_is_a_model_error(tmp_path):
    proc = kimi("ask", CAT, "What?", env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 4
    line = one_error_line(proc)
    assert "moonshotai/Kimi-VL-A3B-Thinking-2506" in line and "unreachable" in line


def test_debug_shows_the_traceback():
    proc = kimi("ask", "missing.png", "What?", "--debug")
    assert proc.returncode != 0
    assert b"Traceback" in proc.stderr


def test_inputs_are_checked_before_the_model_loads(tmp_path):
    # A bad file next to a model that does not exist: the file error wins, so no load was tried.
    proc = kimi("ask", str(tmp_path / "nope.jpg"), "What?", "--model", str(tmp_path / "no-model"))
    assert proc.returncode == 3
    assert "nope.jpg" in one_error_line(proc)


MIXED = [str(ROOT / "examples" / name) for name in ("report.pdf", "clip.mp4", "chelsea.png")]


@pytest.mark.slow
def test_dry_run_plans_mixed_inputs_without_a_model(tmp_path):
    proc = kimi("ask", *MIXED, "Summarise everything", "--dry-run", "--model", str(tmp_path / "absent"))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "Page 3 of 3:" in out and "[00:00:03]" in out and "chelsea.png" in out
    assert "total:" in out


@pytest.mark.slow
def test_dry_run_json_matches_the_real_run(tiny_checkpoint):
    import json

    plan = kimi("ask", *MIXED, "Summarise everything", "--dry-run", "--format", "json",
                "--model", str(tiny_checkpoint))
    assert plan.returncode == 0, plan.stderr.decode()
    planned = json.loads(plan.stdout)
    assert [item["kind"] for item in planned["inputs"]] == ["pdf", "video", "image"]
    run = kimi("ask", *MIXED, "Summarise everything", "--format", "json", "-n", "4",
               "--model", str(tiny_checkpoint))
    assert run.returncode == 0, run.stderr.decode()
    result = json.loads(run.stdout)
    assert result["usage"]["image_tokens"] == planned["image_tokens"]
