"""`kimi chat` in a real pseudo-terminal: a turn, Ctrl-C, `kill -9`, then `--continue`; and no-terminal use."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: prompt_toolkit turns bracketed paste on each time it shows the prompt.
PROMPT_READY = b"\x1b[?2004h"


def _take_terminal() -> None:
    """In the child: make the pty (stdin) the controlling terminal, so Ctrl-C sends SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A process on a pseudo-terminal of 100x40, read until a pattern shows up."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "kimi_cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, cwd=ROOT, start_new_session=True,
                                     preexec_fn=_take_terminal)
        os.close(slave)
        self.fd = master
        self.seen = b""

    def expect(self, pattern: bytes, timeout: float = 60, after: int = 0) -> int:
        """Wait until `pattern` appears past offset `after`; returns the offset just past it."""
        deadline = time.monotonic() + timeout
        while (found := self.seen.find(pattern, after)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} after {timeout} s; output tail: {self.seen[-2000:]!r}"
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:  # the process ended and the pty closed
                    assert pattern in self.seen[after:], self.seen[-2000:]
        return found + len(pattern)

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.fd)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "HF_HUB_OFFLINE": "1", "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm", "NO_COLOR": "1"}
    env.pop("KIMI_DEBUG", None)
    return env


def _wait_for_turns(folder: Path, count: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.glob("*.json") if folder.is_dir() else ():
            data = json.loads(path.read_text())
            if len(data["turns"]) >= count:
                return data
        time.sleep(0.1)
    raise AssertionError(f"no session with {count} turns in {folder}")


@pytest.mark.slow
def test_continue_after_kill_9(tiny_checkpoint, tmp_path):
    image = tmp_path / "cat.png"
    shutil.copy(ROOT / "examples" / "chelsea.png", image)
    # Greedy: the random tiny model then never writes <|im_end|> early, so there is a turn to interrupt.
    env, model = _env(tmp_path), ["--model", str(tiny_checkpoint), "--max-new-tokens", "8", "--temperature", "0"]
    first = Terminal(["chat", str(image), *model], env)
    try:
        at = first.expect(PROMPT_READY)
        first.send("/set max_tokens 4000\r")  # long enough to be stopped halfway
        at = first.expect(PROMPT_READY, after=first.expect(b"max_tokens = 4000", after=at))
        first.send("Describe the picture.\r")
        time.sleep(2.5)  # past prefill: the answer is streaming
        first.send("\x03")
        at = first.expect(b"cut off by Ctrl-C", after=at)
        first.expect(PROMPT_READY, after=at)
        saved = _wait_for_turns(tmp_path / "data" / "kimi" / "sessions", 1)
        os.kill(first.proc.pid, signal.SIGKILL)
        assert first.proc.wait(10) == -signal.SIGKILL
    finally:
        first.close()
    turn, = saved["turns"]
    assert turn["stop_reason"] == "cancelled" and turn["usage"]["generated_tokens"] < 4000
    assert turn["attachments"] == [str(image)]
    image.unlink()  # the file vanishes between the two sessions

    second = Terminal(["chat", "--continue", *model], env)
    try:
        at = second.expect(f"resumed chat {saved['name']}: 1 turn".encode())
        at = second.expect(b"Describe the picture. [cat.png]", after=at)
        at = second.expect(b"(cut off by Ctrl-C)", after=at)
        at = second.expect(f"{image} is gone".encode(), after=at)
        at = second.expect(PROMPT_READY, after=at)
        second.send("/files\r")
        at = second.expect(f"turn 1: {image}".encode(), after=at)
        second.expect(PROMPT_READY, after=at)
        second.send("\x04")
        assert second.proc.wait(30) == 0
    finally:
        second.close()


def test_kimi_alone_on_a_terminal_goes_to_chat(tmp_path):
    # A bad setting stops chat before anything loads: proof enough of the route, in a second.
    term = Terminal([], {**_env(tmp_path), "KIMI_THINKING": "loud"})
    try:
        term.expect(b"kimi: error: KIMI_THINKING=loud: unknown value", timeout=30)
        assert term.proc.wait(30) == 2
    finally:
        term.close()


def _kimi(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)


def test_chat_without_a_terminal_points_to_ask(tmp_path):
    proc = _kimi("chat", env=_env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("kimi: error: kimi chat needs a terminal")
    assert "kimi ask" in proc.stderr and "Traceback" not in proc.stderr


def test_kimi_alone_without_a_terminal_shows_help(tmp_path):
    proc = _kimi(env=_env(tmp_path))
    assert proc.returncode == 0
    assert "Usage: kimi" in proc.stdout and "chat" in proc.stdout


def _sessions(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "kimi" / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize(("args", "content", "message"), [
    (["--session", "bad"], '{"name": "bad", "turns": "abc"}', b"bad.json: turns must be a list, not \"abc\""),
    (["--session", "bad"], '{"name": "bad", "turns": [{"prompt": "hi", "answer": "yo", "tokens_per_s": "fast"}]}',
     b"bad.json: turn 1: tokens_per_s must be a number"),
    (["--continue"], "[1, 2]", b"no saved chat to continue: none of the 1 in"),
])
def test_a_bad_session_is_one_line_and_exit_2(tmp_path, args, content, message):
    (_sessions(tmp_path) / "bad.json").write_text(content)
    term = Terminal(["chat", *args], _env(tmp_path))
    try:
        term.expect(b"kimi: error: ", timeout=30)
        assert term.proc.wait(30) == 2
        term.expect(b"hint: ", timeout=5)
    finally:
        term.close()
    assert message in term.seen and b"Traceback" not in term.seen


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from kimi_cli.repl.store import SessionStore
SessionStore(Path(sys.argv[1])).lock("shared")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_chat_on_the_same_session_is_refused(tmp_path):
    folder = _sessions(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline() == "locked\n"
        term = Terminal(["chat", "--session", "shared"], _env(tmp_path))
        try:
            term.expect(f"kimi: error: chat 'shared' is open in another kimi chat (pid {holder.pid})".encode(),
                        timeout=30)
            term.expect(b"hint: leave that chat first, or use another name: kimi chat --session NEW", timeout=5)
            assert term.proc.wait(30) == 2
        finally:
            term.close()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_real_chats_on_one_session_never_lose_a_turn(tiny_checkpoint, tmp_path):
    env, model = _env(tmp_path), ["--model", str(tiny_checkpoint), "--max-new-tokens", "4", "--temperature", "0"]
    first = Terminal(["chat", "--session", "shared", *model], env)
    try:
        at = first.expect(PROMPT_READY)
        second = Terminal(["chat", "--session", "shared", *model], env)
        try:
            second.expect(b"kimi: error: chat 'shared' is open in another kimi chat", timeout=30)
            assert second.proc.wait(30) == 2
        finally:
            second.close()
        first.send("one\r")
        at = first.expect(PROMPT_READY, after=at)
        first.send("two\r")
        first.expect(PROMPT_READY, after=at)
        saved = _wait_for_turns(tmp_path / "data" / "kimi" / "sessions", 2)
        first.send("\x04")
        assert first.proc.wait(30) == 0
    finally:
        first.close()
    assert [t["prompt"] for t in saved["turns"]] == ["one", "two"]
