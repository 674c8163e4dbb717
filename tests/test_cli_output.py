"""Output modes end to end on the fitted tiny-thinking checkpoint: real markers through the real
tokenizer, splitter and renderers, in pipes and on a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimi_cli.model.fitted import FITTED_ANSWER, FITTED_THINKING

ROOT = Path(__file__).resolve().parents[1]
CAT = str(ROOT / "examples" / "chelsea.png")

#: Each test starts a real `kimi ask` process (a model load) on the fitted checkpoint.
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    for key in ("KIMI_DEBUG", "NO_COLOR", "FORCE_COLOR"):
        if key not in extra:
            env.pop(key, None)
    return env


def _ask(ckpt: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kimi_cli", "ask", CAT, "What is this?", "--model", str(ckpt),
            "--temperature", "0", *extra]


def test_pipe_gets_only_the_answer(thinking_checkpoint):
    proc = subprocess.run(_ask(thinking_checkpoint), capture_output=True, env=_env(), timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == FITTED_ANSWER
    assert b"\x1b" not in proc.stdout
    assert "◁" not in proc.stdout.decode()


def test_head_closes_the_pipe_quietly(thinking_checkpoint):
    cmd = " ".join(f"'{a}'" for a in _ask(thinking_checkpoint)) + " | head -c 10"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, env=_env(), timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.stdout.decode() == FITTED_ANSWER.encode()[:10].decode()
    assert proc.stderr == b""


def test_json_separates_thinking_and_answer(thinking_checkpoint):
    proc = subprocess.run(_ask(thinking_checkpoint, "--format", "json"), capture_output=True, env=_env(),
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["thinking"] == FITTED_THINKING
    assert result["answer"] == FITTED_ANSWER
    assert result["stop_reason"] == "end_turn"
    assert result["usage"]["image_tokens"] > 0 and result["usage"]["thinking_tokens"] > 0
    assert result["files"] == [CAT]


def test_jsonl_streams_typed_events_in_order(thinking_checkpoint):
    proc = subprocess.run(_ask(thinking_checkpoint, "--format", "jsonl"), capture_output=True, env=_env(),
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr.decode()
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "finished"
    first_answer = kinds.index("answer")
    assert "thinking" in kinds[:first_answer] and "thinking" not in kinds[first_answer:]
    assert sum(1 for k in kinds if k == "thinking") > 1  # streamed, not one block
    assert "".join(e["text"] for e in events if e["type"] == "thinking") == FITTED_THINKING
    assert "".join(e["text"] for e in events if e["type"] == "answer") == FITTED_ANSWER


def _run_on_pty(cmd: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """Run `cmd` with stdout and stderr on a pseudo-terminal; returns (exit code, all output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=10), out


def test_no_color_on_a_terminal_writes_no_escape_codes(thinking_checkpoint):
    code, out = _run_on_pty(_ask(thinking_checkpoint), _env(NO_COLOR="1", TERM="xterm-256color",
                                                          COLUMNS="80", LINES="24"))
    assert code == 0, out.decode(errors="replace")
    assert b"\x1b" not in out
    text = out.decode()
    assert FITTED_ANSWER in text
    assert "Thought for" in text


def test_terminal_shows_panels_and_collapses_thinking(thinking_checkpoint):
    code, out = _run_on_pty(_ask(thinking_checkpoint), _env(TERM="xterm-256color", COLUMNS="80", LINES="24"))
    assert code == 0, out.decode(errors="replace")
    text = out.decode()
    assert FITTED_ANSWER in text
    assert "Thought for" in text
    assert "\x1b[?25h" in text or "\x1b[?25l" not in text  # the cursor is left visible


def test_ctrl_c_keeps_the_partial_answer_and_exits_130(tiny_checkpoint):
    """A real SIGINT mid-stream: exit 130, and the last JSON line says cancelled, with what was said."""
    import signal

    cmd = [sys.executable, "-m", "kimi_cli", "ask", "Tell me a long story.", "--model", str(tiny_checkpoint),
           "--temperature", "0", "--max-new-tokens", "16000", "--format", "jsonl"]  # fits the 16384 context
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(), cwd=ROOT)
    lines = []
    while len(lines) < 6:  # start + a few streamed deltas
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        lines.append(line)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    events = [json.loads(x) for x in b"".join(lines).splitlines() + rest.splitlines()]
    assert events[-1]["type"] == "finished"
    assert events[-1]["stop_reason"] == "cancelled"
    streamed = sum(e["type"] in ("thinking", "answer") for e in events)
    assert events[-1]["usage"]["generated_tokens"] >= streamed > 0
    assert b"Traceback" not in err
