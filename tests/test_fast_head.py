"""lm_head in a quantized format's model: int8 with a scale per row (`formats.HEAD_FORMAT`), quantized
when loaded, dequantized a block of rows at a time on the reference path, read in place by the
quantized gemv in the fast decode step (checked against the torch step in Triton's interpreter and on
a GPU), and counted as int8 by the memory plan."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")


def test_large_products_dequantize_a_block_of_rows_at_a_time(monkeypatch):
    from kimi_cli.model import quantized
    from kimi_cli.model.formats import get_format

    fmt = get_format("int8")
    w = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    parts = fmt.quantize(w)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    whole = torch.nn.functional.linear(x, fmt.dequantize(parts, torch.float32))
    seen = []
    real = fmt.dequantize
    monkeypatch.setattr(type(fmt), "dequantize", lambda self, p, dt: seen.append(p["weight"].shape[0]) or real(p, dt))
    monkeypatch.setattr(quantized, "ROWS_AT_ONCE", 64 * 128)  # 128 rows a block
    out = quantized.dequantized_linear(x, fmt, parts)
    assert seen == [128, 128, 44]
    torch.testing.assert_close(out, whole)


def test_quantize_linear_matches_the_format_in_blocks(monkeypatch):
    from kimi_cli.model import quantized
    from kimi_cli.model.formats import get_format

    linear = torch.nn.Linear(64, 300, bias=False)
    monkeypatch.setattr(quantized, "ROWS_AT_ONCE", 64 * 100)
    q = quantized.quantize_linear(linear, get_format("int8"))
    want = get_format("int8").quantize(linear.weight.detach())
    assert torch.equal(q.weight, want["weight"]) and torch.equal(q.weight_scale, want["weight_scale"])


@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4"])
def test_the_memory_plan_counts_lm_head_in_int8(fmt):
    """A vocabulary row more costs an embedding row in bf16 and an lm_head row in the head's format:
    bf16 (2 bytes a weight) for bf16, int8 (1 byte a weight and a 4-byte scale) for the others."""
    from kimi_cli.model.memory import weight_bytes
    from kimi_cli.model.synthetic import get_preset

    p = get_preset("full")
    text, hidden = p.text, p.text["hidden_size"]
    more = weight_bytes({**text, "vocab_size": text["vocab_size"] + 1}, p.vision, fmt)
    head_row = 2 * hidden if fmt == "bf16" else hidden + 4
    assert more - weight_bytes(text, p.vision, fmt) == 2 * hidden + head_row


#: Run in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before Triton is imported), or on a GPU.
CHECK = textwrap.dedent("""
    import sys, torch
    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_head, quantize_modules

    device = sys.argv[1]
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    for fmt in ("int8", "int4"):
        model = build_model("tiny", device=device, dtype=dtype, seed=2)
        quantize_modules(model.model, get_format(fmt))
        quantize_head(model, get_format(fmt))
        ref = FastDecoder(model.model, model.lm_head, 96, device, dtype, backend="torch")
        fast = FastDecoder(model.model, model.lm_head, 96, device, dtype, backend="triton")
        assert type(fast.impl).__name__ == "QuantTritonStep", type(fast.impl)
        assert fast.weights.lm_head.fmt == "int8"
        ref.graphs = fast.graphs = None
        embeds = model.model.embed_tokens(torch.arange(3, 14, device=device).view(1, -1))
        a, b = ref.prefill(embeds), fast.prefill(embeds)
        worst = 0.0
        for t in (5, 9, 17, 4):
            a, b = ref.step(torch.tensor([t], device=device)), fast.step(torch.tensor([t], device=device))
            worst = max(worst, float((a - b).abs().max() / a.abs().max()))
        assert worst < (2e-4 if device == "cpu" else 2e-2), (fmt, worst)
        print(fmt, "head ok", worst)
""")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_quantized_head_kernel_in_the_interpreter():
    pytest.importorskip("transformers")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHECK, "cpu"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("head ok") == 2


@pytest.mark.gpu
def test_the_quantized_head_kernel_on_the_gpu():
    pytest.importorskip("transformers")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    proc = subprocess.run([sys.executable, "-c", CHECK, "cuda"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("head ok") == 2
