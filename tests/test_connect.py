"""`--backend` / `--api-base` resolution and the discovery file, with a real loopback /health server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kimi_cli.discovery import model_key, new_info, read_info, remove_info, runtime_dir, write_info
from kimi_cli.engine.connect import find_target
from kimi_cli.errors import EXIT_MODEL, ModelLoadError, UsageError

MODEL = "moonshotai/Kimi-VL-A3B-Thinking-2506"


@pytest.fixture()
def health():
    """A loopback server whose /health names `server.instance`."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = json.dumps({"status": "ok", "instance": self.server.instance}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.instance = ""
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def env(tmp_path):
    return {"XDG_RUNTIME_DIR": str(tmp_path)}


def _publish(health, env, model=MODEL, **changes):
    info = replace(new_info("127.0.0.1", health.server_address[1], model, model), **changes)
    health.instance = health.instance or info.instance
    return info, write_info(info, env)


def test_explicit_api_base(env):
    target = find_target("auto", MODEL, "http://gpu:8000/v1/", "k", None, env)
    assert (target.api_base, target.model, target.api_key, target.kind) == ("http://gpu:8000/v1", MODEL, "k", "remote")
    assert find_target("server", MODEL, "http://gpu:8000/v1", None, "kimi-vl", env).model == "kimi-vl"


def test_local_and_nothing_running(env):
    assert find_target("local", MODEL, env=env) is None
    assert find_target("auto", MODEL, env=env) is None
    with pytest.raises(ModelLoadError) as info:
        find_target("server", MODEL, env=env)
    assert info.value.exit_code == EXIT_MODEL and "kimi serve" in info.value.hint


@pytest.mark.parametrize(("backend", "api_base"), [("local", "http://x/v1"), ("remote", None)])
def test_impossible_combinations(env, backend, api_base):
    with pytest.raises(UsageError):
        find_target(backend, MODEL, api_base, env=env)


def test_finds_a_live_server_of_the_same_model(health, env):
    info, path = _publish(health, env)
    assert path.parent == runtime_dir(env) and path.stat().st_mode & 0o777 == 0o600
    target = find_target("auto", MODEL, env=env)
    assert target.kind == "server" and target.api_key == info.token
    assert target.api_base == f"http://127.0.0.1:{health.server_address[1]}/v1"
    assert find_target("auto", "someone/other-model", env=env) is None
    remove_info(path, info)
    assert not path.exists()


def test_stale_and_foreign_files_are_ignored(health, env):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _publish(health, env, pid=dead.pid)  # the process is gone
    assert find_target("auto", MODEL, env=env) is None
    health.instance = "another-instance"
    _, path = _publish(health, env)  # alive, but /health names another server (the port was reused)
    assert find_target("auto", MODEL, env=env) is None
    health.instance = read_info(path).instance
    path.chmod(0o644)  # readable by others: not trusted
    assert read_info(path) is None and find_target("auto", MODEL, env=env) is None
    path.chmod(0o600)
    assert find_target("auto", MODEL, env=env) is not None
    path.write_text("{not json")
    assert read_info(path) is None


def test_model_key_resolves_directories(tmp_path, monkeypatch):
    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_key("./ckpt") == str((tmp_path / "ckpt").resolve())
    assert model_key(MODEL) == MODEL
