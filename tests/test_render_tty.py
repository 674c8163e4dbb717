"""Ctrl-C mid-answer on a real pseudo-terminal: the screen after the cut, for `kimi ask` and a chat turn.

A terminal echoes Ctrl-C as `^C`. Written right after a live area's last line (a full-width panel
border) the echo wraps onto a new line, and the live area's next redraw then went one line short:
a stray `╭─ Thinking…` border stayed above the collapsed line, or the first line of the answer
being written was printed twice. Only a real terminal shows this, so these tests run a scripted
turn in a child process on a pty, press Ctrl-C where the script waits for it, and replay what the
terminal received (its echo included) through `fakes.Screen` into a golden file.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from fakes import Screen, assert_golden

TESTS = Path(__file__).resolve().parent
W, H = 80, 24

_CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from fakes import FakeClock, ScriptedEngine, WaitForCancel, reply_events
from kimi_cli.render.env import Environment

where, front, ready = sys.argv[2], sys.argv[3], int(sys.argv[4])
THINKING = ("The user wants to know what is in the picture. I can see an animal on a mat, probably a cat: "
            "pointed ears, whiskers, a long tail. The mat looks like woven straw. I should describe the cat "
            "first, then the setting, and keep it short. ") * 3
ANSWER = "A tabby cat on a mat.\n\nIt has pointed ears and long whiskers, and it loo"
clock = FakeClock()


def echo_state():
    import termios
    lflag = termios.tcgetattr(1)[3]
    return "[terminal echo " + ("on" if lflag & termios.ECHO and lflag & termios.ECHOCTL else "off") + "]"


class Engine(ScriptedEngine):
    def stream(self, request):
        return clock.ticking(super().stream(request), 0.05)

    def reset(self):
        pass


steps = reply_events(THINKING, ANSWER if where == "answer" else "", finish=False)
engine = Engine([*steps, WaitForCancel(lambda: os.write(ready, b"R"))])
env = Environment(stdout=sys.stdout, stderr=sys.stderr, stdout_isatty=True, stderr_isatty=True,
                  width=80, height=24, clock=clock)
if front == "ask":
    from kimi_cli.render import make_renderer
    from kimi_cli.render.base import RenderMeta, render_stream

    outcome = render_stream(make_renderer("auto", "collapse", env), RenderMeta("kimi"), engine.stream(None),
                            engine.cancel)
    print(echo_state())
    sys.exit(outcome.exit_code)
from pathlib import Path
from kimi_cli.repl.chat import Chat
from kimi_cli.repl.store import ChatRecord, SessionStore


class NoFiles:
    def check(self, specs):
        return ()

    def load(self, specs, prompt):
        return [], ()


settings = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": 64, "thinking": "collapse"}
chat = Chat(engine, ChatRecord("t", "kimi", settings=settings), SessionStore(Path(sys.argv[5])), NoFiles(), env)
turn = chat.send("What is in the picture?")
print(f"[kept: {turn.stop_reason}, {len(turn.answer)} characters]")
print(echo_state())
"""


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run_and_interrupt(tmp_path: Path, where: str, front: str) -> tuple[int, str]:
    """Run the scripted turn on an 80x24 pty, press Ctrl-C when it waits; returns (exit code, screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", H, W, 0, 0))
    ready_r, ready_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
           "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(TESTS), where, front, str(ready_w), str(tmp_path)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, pass_fds=(ready_w,),
                            start_new_session=True, preexec_fn=_take_terminal)
    os.close(slave)
    os.close(ready_w)
    seen = b""
    pressed = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            readable = select.select([master, ready_r], [], [], 0.2)[0]
            if ready_r in readable and not pressed:  # the child waits to be interrupted
                assert os.read(ready_r, 1) == b"R"
                time.sleep(0.2)
                os.write(master, b"\x03")
                pressed = True
            if master in readable:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child ended and the pty closed
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        assert pressed, f"the child never reached the point to interrupt: {seen[-2000:]!r}"
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(ready_r)
    return code, Screen(W, H).feed(seen.decode("utf-8", "replace")).text()


@pytest.mark.parametrize("front", ["ask", "chat"])
@pytest.mark.parametrize("where", ["thinking", "answer"])
def test_ctrl_c_leaves_the_screen_right(tmp_path, where, front):
    code, screen = _run_and_interrupt(tmp_path, where, front)
    assert_golden(f"tty_ctrl_c_{front}_{where}.txt", screen)
    assert "Thinking…" not in screen and "^C" not in screen
    assert screen.count("Thought for") == 1
    assert screen.endswith("[terminal echo on]\n")  # as it was before the turn
    assert "✂ cut off by Ctrl-C" in screen
    if where == "answer":
        assert screen.count("A tabby cat on a mat.") == 1 and screen.count("it loo") == 1
    assert code == (130 if front == "ask" else 0)
