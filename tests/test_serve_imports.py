"""Import rules for the server and the remote engine: no heavy imports on `--help`, one-way imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kimi_cli"
HEAVY = ("torch", "transformers", "starlette", "uvicorn", "httpx", "openai")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_help_imports_no_server_or_client_libraries():
    code = ("import sys\nfrom kimi_cli.cli import main\n"
            "for argv in (['serve', '--help'], ['ask', '--help'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "kimi serve" in out.stdout
    assert out.stderr.strip().endswith("HEAVY="), out.stderr


def test_server_is_a_front_end_of_its_own():
    for path in sorted((PACKAGE / "server").glob("*.py")):
        for name in _imports(path):
            assert not name.startswith(("kimi_cli.cli", "kimi_cli.repl", "kimi_cli.render", "rich", "torch")), (
                f"{path.name} imports {name}")


def test_remote_engine_needs_no_torch():
    for name in ("remote.py", "openai_stream.py", "wire.py"):
        for imported in _imports(PACKAGE / "engine" / name):
            assert not imported.startswith(("torch", "transformers", "kimi_cli.cli", "kimi_cli.server")), (
                f"{name} imports {imported}")


def test_a_remote_ask_starts_without_numpy_pydantic_or_httpx_cli(tmp_path):
    """A `kimi ask` that talks to a server imports only what it uses: an image needs Pillow, not numpy;
    typer below 0.29 parses without pydantic; httpx comes without its own command line (click,
    pygments); the default model's processor config is read from the hub cache without
    huggingface_hub. Each of these was 40-120 ms of every warm call's start."""
    import os

    from kimi_cli import DEFAULT_MODEL

    repo = tmp_path / "hub" / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "preprocessor_config.json").write_text('{"patch_size": 14, "in_token_limit": 4096}')
    (repo / "snapshots" / "abc123" / "config.json").write_text('{"text_config": {"max_position_embeddings": 131072}}')
    image = Path(__file__).resolve().parents[1] / "examples" / "chelsea.png"
    argv = ["kimi", "ask", str(image), "What is this?", "--api-base", "http://127.0.0.1:9/v1",
            "--api-model", "kimi-vl", "--no-stdin", "--format", "plain"]
    listing = tmp_path / "modules.json"
    code = ("import atexit, json, runpy, sys\n"
            f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps("
            "[k for k, v in sys.modules.items() if v is not None])))\n"
            f"sys.argv = {argv!r}\nrunpy.run_module('kimi_cli', run_name='__main__')\n")
    env = {**os.environ, "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=env)
    modules = set(json.loads(listing.read_text()))
    assert "kimi_cli.engine.remote" in modules and "httpx" in modules, out.stderr[-2000:]
    assert out.returncode != 0 and "127.0.0.1:9" in out.stderr  # connection refused: one line, no answer
    heavy = ("numpy", "pydantic", "torch", "transformers", "huggingface_hub", "httpx2")
    unwanted = sorted(m for m in modules if m.split(".")[0] in heavy or m == "httpx._main")
    assert unwanted == [], unwanted


def test_the_hub_cache_lookup_follows_refs_main(tmp_path):
    from kimi_cli.model.checkpoint import hub_cache_file

    repo = tmp_path / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots" / "h1").mkdir(parents=True)
    (repo / "snapshots" / "h1" / "f.json").write_text("{}")
    env = {"HF_HUB_CACHE": str(tmp_path)}
    assert hub_cache_file("org/name", "f.json", env) is None  # no ref yet
    (repo / "refs" / "main").write_text("h1\n")
    assert hub_cache_file("org/name", "f.json", env) == repo / "snapshots" / "h1" / "f.json"
    assert hub_cache_file("org/name", "missing.json", env) is None
    (repo / "refs" / "main").write_text("../../etc")
    assert hub_cache_file("org/name", "f.json", env) is None
