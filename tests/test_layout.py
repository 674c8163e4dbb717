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
            "             ['synth', '--help'], ['warmup', '--help']):\n"
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The package-level unit an import belongs to: `kimi_cli.app`, `kimi_cli.config`, ..."""
    return ".".join(module.split(".")[:2])


def _package_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (lazy imports inside functions included).

    Imports of the root package itself (`from kimi_cli import __version__`) are left out: the root
    holds only the version, the default model name and the lazy `Assistant` re-export.
    """
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = _unit(_module_name(path))
        targets = {_unit(name) for name in _imports(path) if name.startswith("kimi_cli.")}
        graph.setdefault(source, set()).update(targets - {source, "kimi_cli"})
    return graph


def test_nothing_outside_cli_imports_cli():
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":  # the entry point runs the CLI
            continue
        for name in _imports(path):
            assert not name.startswith("kimi_cli.cli"), f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_package_import_graph_has_no_cycles():
    graph = _package_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "kimi_cli.app" in graph and "kimi_cli.cli" in graph  # the walk saw the layers


def test_front_ends_do_not_import_each_other():
    graph = _package_graph()
    for front in ("kimi_cli.repl", "kimi_cli.bench", "kimi_cli.api", "kimi_cli.app"):
        assert not graph.get(front, set()) & {"kimi_cli.cli", "kimi_cli.repl", "kimi_cli.api"} - {front}, front


def test_importing_the_package_and_its_api_stays_light():
    code = ("import sys\nimport kimi_cli\nfrom kimi_cli import Assistant, Reply\nimport kimi_cli.app.engines\n"
            "heavy = [m for m in ('torch', 'transformers', 'decord', 'pypdfium2') if m in sys.modules]\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().endswith("HEAVY="), out.stderr


def test_no_module_is_over_400_lines():
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 400, f"{path.relative_to(PACKAGE)}: {lines} lines"
