"""Import rules for the server and the remote engine: no heavy imports on `--help`, one-way imports."""

from __future__ import annotations

import ast
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
