"""User-supplied text we print is escaped: no terminal control from file names, valid UTF-8 JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.textsafe import json_safe, printable

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "examples" / "chelsea.png"
HOSTILE = "x\x1b]0;PWNED\x07\x1b[2J.png"


@pytest.mark.parametrize(("text", "shown"), [
    ("cat.png", "cat.png"),
    ("photo – été ✂ 猫.png", "photo – été ✂ 猫.png"),
    (HOSTILE, "x\\x1b]0;PWNED\\x07\\x1b[2J.png"),
    ("a\nb\tc\rd", "a\\x0ab\\x09c\\x0dd"),
    ("del\x7f", "del\\x7f"),
    ("c1\x9b31m", "c1\\x9b31m"),
    ("\u202egnp.exe", "\\u202egnp.exe"),
    ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
    ("mark\u200f\u061c", "mark\\u200f\\u061c"),
    ("line\u2028sep", "line\\u2028sep"),
    (os.fsdecode(b"c\xff.png"), "c\\xff.png"),
    ("lone \ud800", "lone \\ud800"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # idempotent on its own output


def test_json_safe_only_touches_surrogates() -> None:
    name = os.fsdecode(b"\xfe\xffdir/c\xe9.png")
    doc = {"files": [name, "ok\x1b"], name: (1, None, 2.5), "n": 3}
    safe = json_safe(doc)
    assert safe == {"files": ["\\xfe\\xffdir/c\\xe9.png", "ok\x1b"], "\\xfe\\xffdir/c\\xe9.png": [1, None, 2.5],
                    "n": 3}
    json.dumps(safe, ensure_ascii=False).encode("utf-8")  # strict UTF-8: no surrogates left


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "KIMI_DEBUG": ""}


def _kimi(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], capture_output=True, env=_env(),
                          cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


def _no_control(data: bytes) -> None:
    assert b"\x1b" not in data and b"\x07" not in data and "\u202e".encode() not in data


def test_error_line_escapes_a_hostile_name(tmp_path: Path) -> None:
    proc = _kimi("ask", HOSTILE, "x", cwd=tmp_path)
    assert proc.returncode == 3
    _no_control(proc.stderr)
    assert b"x\\x1b]0;PWNED\\x07\\x1b[2J.png" in proc.stderr
    assert len(proc.stderr.decode().strip().splitlines()) <= 2


@pytest.mark.slow
def test_plan_and_notes_escape_a_hostile_name(tmp_path: Path) -> None:
    (tmp_path / HOSTILE).write_bytes(CAT.read_bytes())
    proc = _kimi("ask", HOSTILE, "x", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _no_control(proc.stdout + proc.stderr)
    assert b"x\\x1b]0;PWNED" in proc.stdout


def _strict_json(data: bytes) -> object:
    """Parse as a strict parser would: UTF-8 only, and no lone surrogates in any string."""
    text = data.decode("utf-8")
    assert "\\ud" not in text.lower()
    return json.loads(text)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in _strings(item)]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_non_utf8_name_in_dry_run_json(tmp_path: Path, fmt: str) -> None:
    name = b"c\xff\xfe.png"
    (tmp_path / os.fsdecode(name)).write_bytes(CAT.read_bytes())
    proc = _kimi("ask", os.fsdecode(name), "x", "--dry-run", "--format", fmt, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "c\\xff\\xfe.png" in _strings(_strict_json(proc.stdout))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_non_utf8_name_in_answer_json(tiny_checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    name = os.fsdecode(b"c\xff.png")
    (tmp_path / name).write_bytes(CAT.read_bytes())
    proc = _kimi("ask", name, "x", "--model", str(tiny_checkpoint), "--format", fmt, "--max-new-tokens", "2",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [_strict_json(line) for line in proc.stdout.splitlines()] if fmt == "jsonl" else [
        _strict_json(proc.stdout)]
    assert any(r.get("files") == ["c\\xff.png"] for r in records if isinstance(r, dict))
