"""`kimi quantize`: write a checkpoint in the official layout with converted matrices plus their scales.

Tensors are read one at a time (memory-mapped), converted on `device` when the format converts them,
and written in shards of at most `SHARD_BYTES`, so host memory stays within one shard. Every other file
of the checkpoint is copied; `config.json` gains a `quantization_config`. The output is written to a
temporary directory next to the target and renamed at the end: an interrupted run leaves no half
checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kimi_cli.errors import ModelLoadError, UsageError
from kimi_cli.model.formats import WeightFormat, is_quantized

SHARD_BYTES = 2_000_000_000


def cache_dir(env: dict[str, str] | os._Environ[str]) -> Path:
    """`$XDG_CACHE_HOME/kimi/quantized` (default `~/.cache/kimi/quantized`)."""
    from kimi_cli.cachedir import kimi_cache

    return kimi_cache(env) / "quantized"


def default_output(model: str, fmt: str, env: dict[str, str] | os._Environ[str]) -> Path:
    """Where `kimi quantize MODEL --format F` writes by default: `<cache>/<name>-<F>`."""
    name = Path(model.rstrip("/")).name if model.count("/") != 1 or Path(model).exists() else model.replace("/", "--")
    return cache_dir(env) / f"{name}-{fmt}"


def quantization_config(fmt: WeightFormat) -> dict[str, Any]:
    """The `quantization_config` block written into config.json."""
    cfg: dict[str, Any] = {"quant_method": "kimi", "format": fmt.name,
                           "converted": "language-model attention, dense MLP, routed and shared experts",
                           "parts": list(fmt.info.parts)}
    if fmt.name == "fp8":
        cfg.update({"fmt": "e4m3", "weight_block_size": [128, 128], "activation_scheme": "weight-only"})
    if fmt.name == "int4":
        cfg.update({"group_size": 128, "packing": "two per byte, low nibble first, offset 8"})
    return cfg


def converted_tensors(src: Path, fmt: WeightFormat, device: str) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of the output checkpoint, in the source's order, scales right after their weight."""
    from kimi_cli.model.qload import ShardReader

    reader = ShardReader(src)
    try:
        for name in reader.map:
            tensor = reader.get(name)
            if not is_quantized(name):
                yield name, tensor
                continue
            base = name[: -len("weight")]
            for part, t in fmt.quantize(tensor.to(device)).items():
                yield base + part, t.cpu()
    finally:
        reader.close()


def write_quantized(src: Path, fmt: WeightFormat, out_dir: Path, device: str = "cpu", force: bool = False) -> int:
    """Write `src` quantized as `fmt` into `out_dir`; returns the number of tensors written."""
    from kimi_cli.model.synthetic import save_sharded

    if fmt.name == "bf16":
        raise UsageError("--format bf16: the original checkpoint already is bf16", hint="use int8, fp8 or int4")
    config = json.loads((src / "config.json").read_text())
    if config.get("quantization_config"):
        raise ModelLoadError(f"{src}: already quantized", hint="quantize the original checkpoint")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"{out_dir}: exists and is not empty", hint="pass --force to replace it, or -o DIR")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _check_space(src, fmt, out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        count = save_sharded(tmp, converted_tensors(src, fmt, device), SHARD_BYTES)
        _copy_side_files(src, tmp, config, fmt)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return count


def _check_space(src: Path, fmt: WeightFormat, where: Path) -> None:
    """Refuse, before writing, an output the disk cannot hold (exit 4 with the numbers)."""
    from kimi_cli.model.config import read_checkpoint_config
    from kimi_cli.model.memory import gib, weight_bytes

    cfg = read_checkpoint_config(src)
    need = weight_bytes(cfg.text, cfg.vision, fmt.name)
    free = shutil.disk_usage(where).free
    if need > free:
        raise ModelLoadError(f"{where}: {gib(free)} free, the {fmt.name} checkpoint needs {gib(need)}",
                             hint="free some disk space or pass -o DIR on a bigger disk")


def _copy_side_files(src: Path, dst: Path, config: dict[str, Any], fmt: WeightFormat) -> None:
    for path in src.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name not in (
                "config.json", "model.safetensors.index.json"):
            shutil.copy2(path, dst / path.name)
    config["quantization_config"] = quantization_config(fmt)
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
