"""`kimi synth` and `kimi bench --synthetic-full` write safely: no symlink followed, room checked, nothing left over."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from kimi_cli.cli import main
from kimi_cli.errors import EXIT_MODEL, ModelLoadError
from kimi_cli.model.synth_output import preset_bytes, synthesize, write_atomically


def _kimi(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KIMI_DEBUG": ""}
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_force_replaces_a_planted_symlink_without_writing_through_it(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "config.json").symlink_to(victim)
    (out / "tiktoken.model").symlink_to(tmp_path / "dangling")
    proc = _kimi("synth", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "dangling").exists()
    for name in ("config.json", "tiktoken.model"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert not [p for p in tmp_path.iterdir() if "kimi-synth" in p.name]


def test_new_directory_appears_complete_with_the_usual_mode(tmp_path: Path) -> None:
    out = tmp_path / "new" / "ckpt"
    synthesize(out, "tiny")
    assert (out / "config.json").is_file() and any(out.glob("model-*.safetensors"))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in out.parent.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError, RuntimeError])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_nothing(tmp_path: Path, exc: type[BaseException], existing: bool) -> None:
    """Ctrl-C (or any failure) part-way: no hidden shard, no half directory, old files untouched."""
    out = tmp_path / "ckpt"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("old")

    def writer(tmp: Path) -> None:
        (tmp / ".shard-00000.safetensors").write_bytes(b"\0" * 4096)
        raise exc("stop")

    with pytest.raises(exc):
        write_atomically(out, writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["ckpt"] if existing else [])
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_full_preset_size_is_known_before_writing() -> None:
    assert 32.8e9 < preset_bytes("full") < 33e9  # bf16 weights (the README's 32.8 GB) plus a margin
    assert preset_bytes("tiny") == preset_bytes("tiny-thinking") < 100e6


Usage = namedtuple("Usage", "total used free")


def test_synth_refuses_without_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """No disk here is small enough, so the free-space figure is the one thing faked."""
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(10**12, 10**12 - 4 * 10**9, 4 * 10**9))
    with pytest.raises(SystemExit) as info:
        main(["synth", str(tmp_path / "full"), "--preset", "full"])
    assert info.value.code == EXIT_MODEL
    err = capsys.readouterr().err
    assert "needs 32.9 GB" in err and "4.0 GB free" in err and "Traceback" not in err
    assert not (tmp_path / "full").exists()


def test_bench_synthetic_full_refuses_without_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(10**12, 10**12 - 10**9, 10**9))
    with pytest.raises(SystemExit) as info:
        main(["bench", "--synthetic-full", "--synth-dir", str(tmp_path / "full"), "--fresh-runs", "0"])
    assert info.value.code == EXIT_MODEL
    err = capsys.readouterr().err
    assert "kimi: error:" in err and "GB free" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_no_room_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: Usage(1, 1, 0))
    with pytest.raises(ModelLoadError) as info:
        synthesize(tmp_path / "t", "tiny")
    assert "\n" not in info.value.message and "needs" in info.value.message
