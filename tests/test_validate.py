"""Hostile model directories: every malformed config or weight file is one line and exit code 4."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kimi_cli.errors import EXIT_MODEL, ModelLoadError
from kimi_cli.model.checkpoint import load_model


def _text(**changes: Any) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        for key, value in changes.items():
            if value is _DROP:
                cfg["text_config"].pop(key)
            else:
                cfg["text_config"][key] = value
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _vision(**changes: Any) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg["vision_config"].update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _top(**changes: Any) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


_DROP = object()


def _shard(d: Path) -> Path:
    return sorted(d.glob("*.safetensors"))[0]


def _truncate_header(d: Path) -> None:
    shard = _shard(d)
    shard.write_bytes(shard.read_bytes()[:20])


def _header_length(n: int) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        shard = _shard(d)
        data = shard.read_bytes()
        shard.write_bytes(struct.pack("<Q", n) + data[8:])
    return edit


def _rewrite_header(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Edit the first shard's JSON header (same length, padded with spaces as the format allows)."""
    def edit(d: Path) -> None:
        shard = _shard(d)
        data = shard.read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        header.pop("__metadata__", None)  # room for the edit
        change(header)
        text = json.dumps(header, separators=(",", ":")).encode()
        assert len(text) <= n, "test edit made the header longer"
        shard.write_bytes(data[:8] + text.ljust(n) + data[8 + n:])
    return edit


def _first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return header[next(k for k in header if k != "__metadata__")]


def _giant(header: dict[str, Any]) -> None:
    _first_tensor(header)["shape"] = [10**9, 10**9]


def _past_end(header: dict[str, Any]) -> None:
    t = _first_tensor(header)
    t["data_offsets"] = [t["data_offsets"][0] + 10**12, t["data_offsets"][1] + 10**12]


def _bad_dtype(header: dict[str, Any]) -> None:
    _first_tensor(header)["dtype"] = "Q7"


def _nested_header(d: Path) -> None:
    """A header that is JSON nested deeper than the parser recurses (a `RecursionError` before)."""
    shard = _shard(d)
    header = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    shard.write_bytes(struct.pack("<Q", len(header)) + header)


def _pickled_only(d: Path) -> None:
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: must never be opened


CASES = [
    ("hidden-size-string", _text(hidden_size="big"), ("text_config.hidden_size", "integer")),
    ("hidden-size-bool", _text(hidden_size=True), ("text_config.hidden_size", "integer")),
    ("hidden-size-float", _text(hidden_size=64.0), ("text_config.hidden_size", "integer")),
    ("negative-layers", _text(num_hidden_layers=-3), ("num_hidden_layers", "-3")),
    ("zero-vocab", _text(vocab_size=0), ("vocab_size",)),
    ("missing-vocab", _text(vocab_size=_DROP), ("vocab_size", "missing")),
    ("huge-vocab", _text(vocab_size=10**12), ("vocab_size", "outside")),
    ("huge-but-in-range", _text(hidden_size=60000, vocab_size=4_000_000), ("parameters", "weight files")),
    ("experts-per-token", _text(num_experts_per_tok=99), ("num_experts_per_tok",)),
    ("dense-layers", _text(first_k_dense_replace=99), ("first_k_dense_replace",)),
    ("nan-eps", _text(rms_norm_eps="nan"), ("rms_norm_eps",)),
    ("negative-theta", _text(rope_theta=-1), ("rope_theta",)),
    ("rope-scaling-list", _text(rope_scaling=[1, 2]), ("rope_scaling",)),
    ("vision-hidden-null", _vision(hidden_size="x"), ("vision_config.hidden_size",)),
    ("merge-kernel", _vision(merge_kernel_size=[2]), ("merge_kernel_size",)),
    ("media-id-outside-vocab", _top(media_placeholder_token_id=10**9), ("media_placeholder_token_id",)),
    ("wrong-model-type", _top(model_type="llama"), ("model_type", "llama")),
    ("vision-config-list", _top(vision_config=[1]), ("vision_config",)),
    ("truncated-header", _truncate_header, ("corrupt safetensors", "header length")),
    ("header-length-huge", _header_length(2**63), ("corrupt safetensors", "header length")),
    ("header-not-json", _header_length(16), ("corrupt safetensors", "JSON")),
    ("giant-tensor", _rewrite_header(_giant), ("corrupt safetensors", "claims")),
    ("offsets-past-end", _rewrite_header(_past_end), ("corrupt safetensors",)),
    ("unknown-dtype", _rewrite_header(_bad_dtype), ("dtype",)),
    ("header-nested-too-deep", _nested_header, ("corrupt safetensors", "JSON")),
    ("pickled-only", _pickled_only, ("pytorch_model.bin", "safetensors")),
]


@pytest.mark.parametrize(("damage", "needles"), [pytest.param(d, n, id=i) for i, d, n in CASES])
def test_malformed_checkpoint(tiny_checkpoint: Path, tmp_path: Path, damage: Callable[[Path], None],
                              needles: tuple[str, ...]) -> None:
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    damage(copy)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(copy), device="cpu")
    err = info.value
    assert err.exit_code == EXIT_MODEL
    assert "\n" not in err.message and (err.hint is None or "\n" not in err.hint)
    for needle in needles:
        assert needle in err.message, err.message


def test_a_directory_of_only_a_pickle_is_refused_first(tmp_path: Path) -> None:
    """Only `pytorch_model.bin`: the pickle is named (not 'config.json missing'), never opened."""
    (tmp_path / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'touch PWNED'\ntR.")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path), device="cpu")
    assert "pytorch_model.bin" in info.value.message and "convert" in (info.value.hint or "")
    assert not (Path.cwd() / "PWNED").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["hidden-size-string", "pickled-only"])
def test_cli_one_line_exit_4(tiny_checkpoint: Path, tmp_path: Path, case: str) -> None:
    """The issue's two cases through the real CLI: one error line (plus hint), exit 4, no traceback."""
    damage = dict((i, d) for i, d, _ in CASES)[case]
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    damage(copy)
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "ask", "hi", "--model", str(copy)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("kimi: error: ") and len(lines) <= 2, proc.stderr
    assert "Traceback" not in proc.stderr
