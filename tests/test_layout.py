"""Architecture rules from STYLE.md, checked by walking the imports of every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.errors import EXIT_CODES

PACKAGE = Path(__file__).resolve().parents[1] / "kimi_cli"
README = Path(__file__).resolve().parents[1] / "README.md"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize(("folder", "allowed"), [
    ("media", ("kimi_cli.errors", "kimi_cli.media")),
    ("events", ("kimi_cli.errors", "kimi_cli.events")),
])
def test_leaf_packages_import_only_errors(folder, allowed):
    for path in _modules(folder):
        for name in _imports(path):
            if name.startswith("kimi_cli"):
                assert name.startswith(allowed), f"{path.name} imports {name}"


def test_render_never_imports_engine_model_or_torch():
    for path in _modules("render"):
        for name in _imports(path):
            assert not name.startswith(("kimi_cli.engine", "kimi_cli.model", "torch", "transformers")), (
                f"{path.name} imports {name}")


def test_nothing_imports_click_directly():
    for path in PACKAGE.rglob("*.py"):
        assert not any(n == "click" or n.startswith("click.") for n in _imports(path)), path


def test_help_does_not_import_torch():
    code = ("import sys\nfrom kimi_cli.cli import main\n"
            "for argv in (['--help'], ['ask', '--help'], ['chat', '--help'], ['bench', '--help'],\n"
            "             ['synth', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'decord', 'pypdfium2') if m in sys.modules]\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage" in out.stdout
    assert out.stderr.strip().endswith("HEAVY="), out.stderr


def test_readme_documents_every_exit_code():
    text = README.read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", text, flags=re.M))
    assert {int(code) for code in table} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert table[str(code)] == meaning
