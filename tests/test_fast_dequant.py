"""The quantized prefill's one-pass weight widening (`engine/fast/dequant_kernels.py`) against the formats'
own `dequantize`: in Triton's interpreter on the CPU (float32: bit for bit), on a GPU in bf16 (bit for
bit, gpu marker), the patch's scope, and the warm-up's plan of its variants."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kimi_cli.engine.fast import dequant_kernels as dk
from kimi_cli.model import quantized
from kimi_cli.model.formats import get_format

NEEDS_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
FORMATS = ["int8", "fp8", "int4"]
#: stacks of matrices with partial scale groups and blocks (int4 and fp8: 200 columns, 200 rows for fp8)
SHAPES = [(3, 200, 384), (130, 256), (2, 64, 1408), (1, 200, 200)]


def _parts(fmt: str, shape: tuple[int, ...], device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=gen) * 0.05
    w[..., 0, :7] *= 40  # an outlier row start: scales of every size
    return {k: v.contiguous().to(device) for k, v in get_format(fmt).quantize(w).items()}


#: Run in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before Triton is imported).
INTERPRETED = textwrap.dedent("""
    import sys, torch
    from kimi_cli.engine.fast import dequant_kernels as dk
    from kimi_cli.model import quantized
    from kimi_cli.model.checkpoint import load_model
    from kimi_cli.model.formats import get_format
    sys.path.insert(0, sys.argv[2])
    from test_fast_dequant import FORMATS, SHAPES, _parts

    for name in FORMATS:
        fmt = get_format(name)
        for shape in SHAPES:
            parts = _parts(name, shape)
            assert dk.covers(fmt, parts, torch.float32)
            got, ref = dk.dequantize(fmt, parts, torch.float32), fmt.dequantize(parts, torch.float32)
            assert got.shape == ref.shape and torch.equal(got, ref), (name, shape)
            # the interpreter casts to bf16 by truncation (the GPU rounds to nearest even, as torch):
            # the float32 result is the exact product, so torch's rounding of it is the reference
            half = dk.dequantize(fmt, parts, torch.bfloat16)
            assert half.dtype == torch.bfloat16 and torch.equal(got.bfloat16(), fmt.dequantize(parts, torch.bfloat16))
            assert ((half.float() - ref).abs() <= ref.abs() * 2 ** -7).all(), (name, shape)

    # a quantized model's forward with the patch: every module's parts go through the kernel, and the
    # logits are the same bits in float32
    for name in FORMATS:
        model = load_model(sys.argv[1], device="cpu", quantize=name).model
        modules = [m for m in model.modules() if isinstance(m, (quantized.QuantLinear, quantized.QuantExperts))]
        assert modules and all(dk.covers(m.fmt, {p: getattr(m, p if isinstance(m, quantized.QuantLinear)
                                                             else "gate_" + p) for p in m.fmt.info.parts},
                                         torch.float32) for m in modules)
        ids = torch.arange(3, 40).view(1, -1)
        with torch.no_grad():
            plain = model(input_ids=ids).logits
            with dk.patched() as active:
                assert active and quantized.dequantize is dk.dequantize
                ours = model(input_ids=ids).logits
        assert quantized.dequantize is not dk.dequantize
        assert torch.equal(plain, ours), (name, (plain - ours).abs().max().item())
    print("dequant ok")
""")


@pytest.mark.slow
@NEEDS_TRITON
def test_dequant_kernel_in_the_triton_interpreter(tiny_checkpoint):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED, str(tiny_checkpoint), os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "dequant ok" in proc.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_cpu_tensors_keep_the_formats_own_dequantize(fmt):
    """Outside the interpreter the kernel covers no CPU tensor: the patched call is the reference's."""
    parts = _parts(fmt, (2, 64, 256))
    f = get_format(fmt)
    assert dk.covers(f, parts, torch.bfloat16) is (dk.HAVE_TRITON and dk._INTERPRET)
    assert torch.equal(dk.dequantize(f, parts, torch.bfloat16), f.dequantize(parts, torch.bfloat16))
    assert not dk.covers(get_format("bf16"), {"weight": torch.zeros(4, 4)}, torch.bfloat16)
    strided = {k: v.transpose(-1, -2) if v.dim() > 1 else v for k, v in parts.items()}
    assert not dk.covers(f, strided, torch.bfloat16)


def test_the_patch_is_scoped_and_undone():
    before = quantized.dequantize
    with pytest.raises(RuntimeError), dk.patched() as active:
        assert (quantized.dequantize is dk.dequantize) is active
        with dk.patched():
            assert (quantized.dequantize is dk.dequantize) is active
        assert (quantized.dequantize is dk.dequantize) is active
        raise RuntimeError("out of memory in a prefill")
    assert quantized.dequantize is before


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_warm_up_plans_every_widening_a_prefill_makes(tiny_checkpoint, fmt):
    """The variants a real prefill of the tiny checkpoint launches (recorded, no Triton needed) are
    among those `prewarm.plan` compiles ahead for its config: each matrix width in the format, and
    lm_head in its own format."""
    from kimi_cli.app.warmup import model_shape
    from kimi_cli.engine.fast import FastDecoder, prewarm
    from kimi_cli.model.checkpoint import load_model

    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="bfloat16", quantize=fmt)
    sink: list = []
    kernel = prewarm._RecordedKernel("dequant_kernels", "_dequant_kernel", sink)

    def recorded(f, parts, dtype):
        dk.dequantize(f, parts, dtype, kernel=kernel)  # records the launch, computes nothing
        return f.dequantize(parts, dtype)

    lm = loaded.model.model.language_model
    original, quantized.dequantize = quantized.dequantize, recorded
    try:
        dec = FastDecoder(lm, loaded.model.lm_head, 256, "cpu", torch.bfloat16, fused_prefill=False)
        dec.prefill(lm.embed_tokens(torch.arange(3, 60).view(1, -1)))
    finally:
        quantized.dequantize = original
    shape = model_shape(loaded.checkpoint, torch.bfloat16, loaded.weight_format)
    planned = prewarm.plan(prewarm.ModelShape(shape.text_config, shape.dtype, shape.fmt), [1024])

    def key(la):  # what Triton specialises on: the pointers' dtypes and alignment and the constexprs
        # (the kernel's ints, row counts and scale strides, are `do_not_specialize`)
        return la.variant()[2][:3], la.kwargs

    widths = {dict(la.kwargs)["K"] for la in sink}
    assert len(widths) >= 4 and {dict(la.kwargs)["FMT"] for la in sink} == {dk.CODES[fmt], dk.CODES["int8"]}
    assert {key(la) for la in sink} <= {key(la) for la in planned if la.module == "dequant_kernels"}


@pytest.mark.gpu
@pytest.mark.skipif(not dk.HAVE_TRITON, reason="needs Triton")
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_widening_is_the_references_bits(fmt):
    """bf16 and float32 on the GPU, on Kimi-VL's expert shapes (a group of 8, and one expert's down
    product): the kernel's output is the format's own, bit for bit."""
    f = get_format(fmt)
    for shape in [(8, 1408, 2048), (1, 2048, 1408), (3, 200, 384)]:
        parts = _parts(fmt, shape, "cuda", seed=1)
        for dtype in (torch.bfloat16, torch.float32):
            assert dk.covers(f, parts, dtype)
            assert torch.equal(dk.dequantize(f, parts, dtype), f.dequantize(parts, dtype)), (shape, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not dk.HAVE_TRITON, reason="needs Triton")
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_quantized_prefill_is_unchanged_by_the_widening(tiny_checkpoint, fmt):
    from kimi_cli.model.checkpoint import load_model

    model = load_model(str(tiny_checkpoint), device="cuda", dtype="bfloat16", quantize=fmt).model
    ids = torch.arange(3, 300, device="cuda").view(1, -1)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with dk.patched():
            ours = model(input_ids=ids).logits
    assert torch.equal(plain, ours)
