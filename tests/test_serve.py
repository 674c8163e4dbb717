"""`kimi serve` as a real subprocess on a free loopback port, driven by the official `openai` client.

One server of the tiny-thinking checkpoint (replies `◁think▷…◁/think▷A small test image!`) serves
most tests; one of the tiny random checkpoint (which never stops on its own) serves the disconnect
test and then exits through its idle timeout.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kimi_cli.discovery import find_server, read_info
from kimi_cli.model.fitted import FITTED_ANSWER, FITTED_THINKING

#: Real `kimi serve` processes (each loads a checkpoint): the slow, end-to-end part of the suite.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "examples" / "chelsea.png"
CAT_URL = "data:image/png;base64," + base64.b64encode(CAT.read_bytes()).decode()


def _small_png_url() -> str:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), "blue").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


SMALL_URL = _small_png_url()


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    runtime: Path
    model: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def info(self):
        return read_info(self.runtime / "kimi" / f"serve-{self.port}.json")

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.info.token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_env(runtime: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("KIMI_API_KEY", None)
    return env


@contextmanager
def running_server(checkpoint: Path, runtime: Path, *args: str):
    runtime.mkdir(mode=0o700, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kimi_cli", "serve", "--model", str(checkpoint),
                             "--port", str(port), *args], env=serve_env(runtime), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = Server(proc, port, runtime, str(checkpoint))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            if httpx.get(server.base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def thinking_server(thinking_checkpoint, tmp_path_factory):
    with running_server(thinking_checkpoint, tmp_path_factory.mktemp("run"), "--max-body-mb", "1",
                        "--max-images", "3") as server:
        yield server


def client(server: Server, token: str | None = None):
    from openai import OpenAI

    return OpenAI(base_url=server.base + "/v1", api_key=token or server.info.token, max_retries=0)


def image_message(text: str = "What is in this picture?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": CAT_URL}},
                                         {"type": "text", "text": text}]}]


def test_openai_client_streams_reasoning_and_answer_apart(thinking_server):
    stream = client(thinking_server).chat.completions.create(
        model=thinking_server.model, messages=image_message(), stream=True, temperature=0, seed=0,
        stream_options={"include_usage": True})
    reasoning, content, usage, finish = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
            assert (getattr(choice.delta, "reasoning", None) or "") == reasoning[-1]
            content.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(reasoning) == FITTED_THINKING
    assert "".join(content) == FITTED_ANSWER
    assert finish == "stop"
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.prompt_tokens > usage.prompt_tokens_details.cached_tokens >= 0


def test_models_and_non_streamed_reply(thinking_server):
    api = client(thinking_server)
    [model] = api.models.list().data
    assert model.id == thinking_server.model
    assert model.context_length > 0 and "image" in model.input_modalities
    reply = api.chat.completions.create(model="kimi-vl", messages=image_message(), temperature=0)
    assert reply.choices[0].message.content == FITTED_ANSWER
    assert reply.choices[0].message.reasoning_content == FITTED_THINKING


def test_sixteen_concurrent_clients_all_get_the_whole_answer(thinking_server):
    answers: list[str] = []

    def ask(i: int) -> None:
        api = client(thinking_server)
        if i % 2:
            reply = api.chat.completions.create(model="kimi-vl", messages=image_message(), temperature=0)
            answers.append(reply.choices[0].message.content)
            return
        stream = api.chat.completions.create(model="kimi-vl", messages=image_message(), temperature=0,
                                             stream=True)
        answers.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert answers == [FITTED_ANSWER] * 16


def test_llm_plugin_streams_through_the_server(thinking_server, monkeypatch, tmp_path):
    llm = pytest.importorskip("llm")
    from kimi_cli import llm_plugin

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(thinking_server.runtime))
    monkeypatch.setenv("KIMI_MODEL", thinking_server.model)
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    for name in ("KIMI_API_BASE", "KIMI_API_KEY", "KIMI_API_MODEL"):
        monkeypatch.delenv(name, raising=False)
    if not llm.pm.is_registered(llm_plugin):
        llm.pm.register(llm_plugin, name="kimi-vl-test")
    model = llm.get_model("kimi-vl")
    response = model.prompt("What is in this picture?", attachments=[llm.Attachment(path=str(CAT))],
                            temperature=0)
    assert response.text() == FITTED_ANSWER
    from llm.parts import ReasoningPart

    reasoning = "".join(p.text for m in response.messages() for p in m.parts if isinstance(p, ReasoningPart))
    assert reasoning == FITTED_THINKING
    assert response.input_tokens > 0 and response.output_tokens > 0
    follow = model.conversation()
    follow.prompt("hi", temperature=0).text()
    assert follow.prompt("and now?", temperature=0).text() == FITTED_ANSWER


def test_chat_through_the_server_reuses_its_cache(thinking_server, tmp_path, monkeypatch):
    from fakes import make_env
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from kimi_cli.engine.remote import RemoteEngine
    from kimi_cli.media.options import MediaOptions
    from kimi_cli.repl.chat import Chat, PlannedMedia
    from kimi_cli.repl.session import make_session, run_repl
    from kimi_cli.repl.store import ChatRecord, SessionStore

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.png").write_bytes(CAT.read_bytes())
    info = thinking_server.info
    engine = RemoteEngine(info.api_base, info.model_id, info.token)
    record = ChatRecord("served", thinking_server.model,
                        settings={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64, "thinking": "hide"})
    chat = Chat(engine, record, SessionStore(tmp_path / "sessions"), PlannedMedia(MediaOptions(), thinking_server.model),
                make_env())
    with create_pipe_input() as pipe:
        pipe.send_text("What is in @cat.png?\r" + "And the colours?\r" + "\x04")
        run_repl(chat, make_session(InMemoryHistory(), input=pipe, output=DummyOutput()))
    first, second = chat.record.turns
    assert first.answer == second.answer == FITTED_ANSWER
    assert first.usage.image_tokens > 0
    assert second.usage.reused_prompt_tokens > first.usage.image_tokens  # the server kept the first turn


def _post(server: Server, body: bytes | dict, token: str | None = None) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.base + "/v1/chat/completions", content=data, timeout=60,
                      headers={**server.headers(token), "Content-Type": "application/json"})


def _chat(content, model: str = "kimi-vl") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}


@pytest.mark.parametrize(("body", "token", "status", "code"), [
    (b'{"model": "kimi-vl", "messages": [', None, 400, "invalid_json"),
    (_chat("hi", model="gpt-4o"), None, 404, "model_not_found"),
    (_chat("x" * (2 * 1024 * 1024)), None, 413, "request_too_large"),
    (_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}}]), None, 400,
     "invalid_base64"),
    (_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]), None, 400,
     "invalid_image"),
    (_chat([{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]), None, 400, "invalid_image_url"),
    (_chat([{"type": "image_url", "image_url": {"url": SMALL_URL}}] * 4), None, 400, "too_many_images"),
    (_chat("hi"), "wrong-token", 401, "invalid_api_key"),
    ({**_chat("hi"), "temperature": "hot"}, None, 422, "invalid_value"),
    ({**_chat("hi"), "max_tokens": 10**9}, None, 400, "max_tokens_too_large"),
    (_chat("lorem ipsum " * 20000), None, 400, "context_length_exceeded"),
])
def test_bad_requests_get_json_errors_and_the_server_stays_up(thinking_server, body, token, status, code):
    response = _post(thinking_server, body, token)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "Traceback" not in response.text
    ok = _post(thinking_server, {**_chat("hi"), "temperature": 0, "max_tokens": 64})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == FITTED_ANSWER


def test_unknown_route_and_missing_token(thinking_server):
    assert httpx.get(thinking_server.base + "/v2/nothing").json()["error"]["code"] == "not_found"
    assert httpx.get(thinking_server.base + "/v1/models").status_code == 401


def test_discovery_file_is_private_and_stale_files_are_ignored(thinking_server):
    path = thinking_server.runtime / "kimi" / f"serve-{thinking_server.port}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    live = thinking_server.info
    # A stale file of the same model (its process is gone) sorts first and must be skipped.
    stale = dict(vars(live), port=free_port(), pid=_dead_pid(), instance="0" * 16)
    stale_path = path.parent / "serve-1.json"
    fd = os.open(stale_path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stale, handle)
    readable = path.parent / "serve-2.json"
    readable.write_text(json.dumps(dict(vars(live), instance="1" * 16)))
    readable.chmod(0o644)  # readable by others: never trusted
    env = {"XDG_RUNTIME_DIR": str(thinking_server.runtime)}
    try:
        found = find_server(thinking_server.model, env)
        assert found is not None and found.instance == live.instance
        assert find_server("some/other-model", env) is None
    finally:
        stale_path.unlink()
        readable.unlink()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_non_loopback_host_needs_a_key(tiny_checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "serve", "--model", str(tiny_checkpoint),
                           "--host", "0.0.0.0", "--port", str(free_port())], env=serve_env(tmp_path),
                          capture_output=True, timeout=60, cwd=ROOT)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.startswith("kimi: error: --host 0.0.0.0") and "--api-key" in err and "Traceback" not in err
    assert not (tmp_path / "kimi").exists()


def kimi_ask(runtime: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kimi_cli", "ask", *args], env=serve_env(runtime),
                          capture_output=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_ask_auto_uses_the_server_and_answers_as_local_then_disconnect_and_idle_exit(tiny_checkpoint, tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    question = (str(CAT), "Describe it.", "--model", str(tiny_checkpoint), "-n", "24", "-t", "0", "--seed", "0",
                "--format", "json")
    local = kimi_ask(runtime, *question)
    assert local.returncode == 0, local.stderr.decode()
    assert json.loads(local.stdout)["backend"] == "local"
    missing = kimi_ask(runtime, *question, "--backend", "server")
    assert missing.returncode == 4 and b"no running `kimi serve`" in missing.stderr
    with running_server(tiny_checkpoint, runtime, "--idle-timeout", "3s") as server:
        auto = kimi_ask(runtime, *question)  # --backend auto is the default
        assert auto.returncode == 0, auto.stderr.decode()
        remote, mine = json.loads(auto.stdout), json.loads(local.stdout)
        assert remote["backend"] == "server"
        assert remote["answer"] == mine["answer"] and remote["thinking"] == mine["thinking"]
        assert remote["usage"]["prompt_tokens"] == mine["usage"]["prompt_tokens"]
        assert remote["usage"]["image_tokens"] == mine["usage"]["image_tokens"]
        assert auto.stderr == b""
        body = {"model": "kimi-vl", "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 16000, "stream": True, "temperature": 0}  # greedy: the tiny model never stops
        with httpx.stream("POST", server.base + "/v1/chat/completions", json=body, headers=server.headers(),
                          timeout=60) as response:
            lines = 0
            for line in response.iter_lines():
                lines += line.startswith("data:")
                if lines >= 5:
                    break  # leave mid-stream: the connection closes
        short = _post(server, {"model": "kimi-vl", "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 4, "temperature": 0})
        assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 4
        health = httpx.get(server.base + "/health").json()
        assert health["cancelled"] == 1 and health["completed"] == 2
        discovery = server.runtime / "kimi" / f"serve-{server.port}.json"
        assert discovery.exists()
        assert server.proc.wait(timeout=60) == 0  # idle for 3 s: exits by itself
        assert not discovery.exists()
        err = server.proc.stderr.read().decode()
        assert "idle" in err
        # it generated once before announcing itself (on a GPU: compiled and captured before any client)
        lines = [line for line in err.splitlines() if line.startswith("kimi serve:")]
        assert lines[0].startswith("kimi serve: warmed up in") and " on http://" in lines[1], err


@pytest.mark.parametrize(("extra", "code", "needle"), [
    (("--backend", "local", "--api-base", "http://127.0.0.1:9/v1"), 2, "--backend local"),
    (("--api-base", "http://127.0.0.1:{port}/v1"), 4, "cannot connect"),
])
def test_remote_backend_errors_are_one_line(tiny_checkpoint, tmp_path, extra, code, needle):
    extra = tuple(a.replace("{port}", str(free_port())) for a in extra)
    proc = kimi_ask(tmp_path, str(CAT), "What?", "--model", str(tiny_checkpoint), *extra)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and needle in err
    assert [line for line in err.splitlines() if line.startswith("kimi: error:")] == [err.splitlines()[0]]


def test_thinking_budget_reasoning_effort_and_response_format_through_the_server(thinking_server):
    api = client(thinking_server)
    cut = api.chat.completions.create(model="kimi-vl", messages=image_message(), temperature=0,
                                      extra_body={"thinking_token_budget": 2})
    message = cut.choices[0].message
    assert message.content == FITTED_ANSWER
    assert FITTED_THINKING.startswith(message.reasoning_content) and message.reasoning_content != FITTED_THINKING
    skipped = api.chat.completions.create(model="kimi-vl", messages=image_message(), temperature=0,
                                          extra_body={"reasoning_effort": "none"})
    assert skipped.choices[0].message.content == FITTED_ANSWER
    assert not getattr(skipped.choices[0].message, "reasoning_content", None)
    schema = {"type": "object", "properties": {"kind": {"enum": ["photo", "drawing"]}}, "required": ["kind"],
              "additionalProperties": False}
    shaped = api.chat.completions.create(
        model="kimi-vl", messages=image_message(), temperature=0.8, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "kind", "schema": schema}})
    assert json.loads(shaped.choices[0].message.content)["kind"] in ("photo", "drawing")


def test_each_through_the_server(thinking_server, tmp_path):
    files = []
    for name in ("a.png", "b.png"):
        files.append(tmp_path / name)
        files[-1].write_bytes(CAT.read_bytes())
    proc = kimi_ask(thinking_server.runtime, "--each", *map(str, files), "What is in this picture?", "--model",
                    thinking_server.model, "--backend", "server", "-t", "0", "-n", "200", "--format", "jsonl",
                    "--json-schema", '{"type": "object", "properties": {"n": {"enum": [1, 2]}}, "required": ["n"], '
                    '"additionalProperties": false}')
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == list(map(str, files))
    assert all(json.loads(r["answer"])["n"] in (1, 2) and r["error"] is None for r in records)
