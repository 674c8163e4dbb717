"""Piped stdin: read as context unless `--no-stdin`, said so on a terminal, never waited on by --dry-run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.app.inputs import read_available, read_stdin_text, stdin_note

ROOT = Path(__file__).resolve().parents[1]
CAT = str(ROOT / "examples" / "chelsea.png")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _kimi(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], input=stdin, capture_output=True, env=full,
                          timeout=60, cwd=ROOT)


def test_piped_text_joins_the_prompt_unless_no_stdin():
    args = ("ask", CAT, "caption", "--dry-run", "--format", "json")
    alone = _kimi(*args)
    piped = _kimi(*args, stdin=b"b.png\nc.png\n" * 200)
    off = _kimi(*args, "--no-stdin", stdin=b"b.png\nc.png\n" * 200)
    off_env = _kimi(*args, stdin=b"b.png\nc.png\n" * 200, env={"KIMI_NO_STDIN": "1"})
    assert alone.returncode == piped.returncode == off.returncode == off_env.returncode == 0, off.stderr
    assert piped.stdout != alone.stdout  # the list became context
    assert off.stdout == alone.stdout == off_env.stdout
    assert off.stderr == b""  # not a terminal: no note


@pytest.mark.slow
def test_dry_run_does_not_wait_for_a_silent_writer():
    proc = subprocess.Popen([sys.executable, "-m", "kimi_cli", "ask", CAT, "x", "--dry-run"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.wait(timeout=30) == 0  # stdin is still open: `sleep 20 | kimi ask ... --dry-run`
        assert b"image tokens" in proc.stdout.read()
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def test_read_available_stops_on_silence_and_reads_to_eof(tmp_path):
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"some text")
    with os.fdopen(read_fd, "rb") as reader:
        assert read_available(reader, idle_s=0.05) == (b"some text", True)  # the writer is still there
        os.close(write_fd)
        assert read_available(reader, idle_s=0.05) == (b"", False)
    path = tmp_path / "in.txt"
    path.write_text("héllo")
    with open(path, encoding="utf-8") as stdin:
        assert read_stdin_text(stdin, wait=False) == "héllo"


def test_terminal_stdin_is_not_read_and_the_note_goes_to_a_terminal_only():
    assert read_stdin_text(Tty("typed")) is None
    assert stdin_note("x" * 1234, Tty()) == "added 1234 characters from stdin (--no-stdin turns this off)"
    assert stdin_note("x" * 1234, io.StringIO()) is None
    assert stdin_note("\n", Tty()) is None


def test_undecodable_stdin_is_a_usage_error(tmp_path):
    from kimi_cli.errors import UsageError

    path = tmp_path / "bin"
    path.write_bytes(b"\xff\xfe\x00")
    with open(path, "rb") as raw, pytest.raises(UsageError, match="not UTF-8"):
        read_stdin_text(io.TextIOWrapper(raw))
