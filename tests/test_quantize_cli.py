"""`kimi quantize` round trip on the tiny checkpoint, `--quantize` / `--max-gpu-memory` usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from kimi_cli.model.qwrite import default_output


def _kimi(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "kimi_cli", *args], capture_output=True, text=True,
                          env=full, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def int8_dir(thinking_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "int8"
    proc = _kimi("quantize", str(thinking_checkpoint), "--format", "int8", "-o", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    return out


@pytest.mark.slow
def test_quantized_checkpoint_has_the_official_layout_plus_scales(int8_dir, thinking_checkpoint):
    from safetensors import safe_open

    config = json.loads((int8_dir / "config.json").read_text())
    assert config["quantization_config"]["format"] == "int8"
    assert config["model_type"] == "kimi_vl"
    index = json.loads((int8_dir / "model.safetensors.index.json").read_text())["weight_map"]
    original = json.loads((thinking_checkpoint / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(original) <= set(index)
    name = "language_model.model.layers.1.mlp.experts.3.up_proj.weight"
    assert name + "_scale" in index and "language_model.lm_head.weight_scale" not in index
    with safe_open(str(int8_dir / index[name]), framework="pt") as f:
        assert f.get_tensor(name).dtype == torch.int8
    for side in ("tiktoken.model", "tokenizer_config.json", "preprocessor_config.json"):
        assert (int8_dir / side).is_file()
    assert not [p for p in int8_dir.parent.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.slow
def test_a_quantized_checkpoint_loads_as_stored_and_answers_the_same(int8_dir, thinking_checkpoint):
    from kimi_cli.model.checkpoint import load_model

    stored = load_model(str(int8_dir), device="cpu")
    fly = load_model(str(thinking_checkpoint), device="cpu", quantize="int8")
    assert stored.weight_format == "int8" and stored.notes == ()
    a = stored.model.state_dict()
    b = fly.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ask_accepts_the_quantized_directory(int8_dir):
    proc = _kimi("ask", "--model", str(int8_dir), "hi", "--temperature", "0", "-n", "40")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "A small test image!"
    assert proc.stderr == ""


@pytest.mark.slow
def test_a_quantized_checkpoint_refuses_another_format(int8_dir):
    proc = _kimi("ask", "--model", str(int8_dir), "hi", "--quantize", "int4", "-n", "4")
    assert proc.returncode == 4 and "quantized as int8" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--quantize", "int3"], "--quantize int3: unknown value"),
    (["--max-gpu-memory", "lots"], "--max-gpu-memory lots: not a size"),
])
@pytest.mark.slow
def test_bad_values_are_usage_errors(thinking_checkpoint, args, message):
    proc = _kimi("ask", "--model", str(thinking_checkpoint), "hi", *args)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_quantize_refuses_bf16_and_unknown_formats(thinking_checkpoint, tmp_path):
    proc = _kimi("quantize", str(thinking_checkpoint), "--format", "bf16", "-o", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--format bf16" in proc.stderr


def test_default_output_is_in_the_cache():
    env = {"XDG_CACHE_HOME": "/c", "HOME": "/h"}
    assert str(default_output("moonshotai/Kimi-VL-A3B-Thinking-2506", "fp8", env)) == \
        "/c/kimi/quantized/moonshotai--Kimi-VL-A3B-Thinking-2506-fp8"
    assert str(default_output("/models/kimi/", "int4", {"HOME": "/h"})) == "/h/.cache/kimi/quantized/kimi-int4"


@pytest.mark.slow
def test_a_stored_checkpoint_missing_a_scale_is_one_line(int8_dir, tmp_path):
    """A quantized checkpoint whose scale tensor is gone fails with a one-line error, not a traceback."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(int8_dir, broken)
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "language_model.model.layers.1.self_attn.q_proj.weight_scale"
    shard = broken / index["weight_map"].pop(name)
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    proc = _kimi("ask", "--model", str(broken), "hi", "-n", "4")
    assert proc.returncode == 4, proc.stderr
    assert "weight_scale: missing from the int8 checkpoint" in proc.stderr and "Traceback" not in proc.stderr
