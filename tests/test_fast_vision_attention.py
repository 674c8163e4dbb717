"""The vision tower's attention kernel (`engine/fast/vision_attention.py`) against attention in float32:
in Triton's interpreter on the CPU (float32, where it must agree to rounding), through the fast path's
vision call on the tiny checkpoint, on a GPU in bf16 (gpu marker), and the patch's scope everywhere."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kimi_cli.engine.fast import vision_attention as va

NEEDS_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

#: Run in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before Triton is imported).
INTERPRETED = textwrap.dedent("""
    import sys, torch
    import numpy as np
    from PIL import Image
    from kimi_cli.engine import fastpath
    from kimi_cli.engine.fast import vision_attention as va
    from kimi_cli.engine.plain import prompt_keys, suffix_grid, suffix_images
    from kimi_cli.model.checkpoint import load_model

    torch.manual_seed(0)
    # heads of 72 (64 + a tail of 8 padded to 16), 64 (no tail) and 96 (a tail of 32); sequences
    # packed side by side, of lengths that are no multiple of the blocks, one of a single position
    for d, lens in [(72, [200, 64, 1, 129]), (64, [130]), (96, [70, 257])]:
        n, h = sum(lens), 3
        q, k, v = (torch.randn(n, h, d) for _ in range(3))
        cu = torch.tensor([0, *np.cumsum(lens).tolist()], dtype=torch.int32)
        out = va.attention(q, k, v, cu, max(lens), d ** -0.5)
        ref = va.reference(q, k, v, cu, d ** -0.5)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # strided inputs (the heads of one wide projection), as the layout the tower could hand over
        wide = torch.randn(n, h, 3 * d)
        qs, ks, vs = wide[..., :d], wide[..., d:2 * d], wide[..., 2 * d:]
        torch.testing.assert_close(va.attention(qs, ks, vs, cu, max(lens), 0.1), va.reference(qs, ks, vs, cu, 0.1),
                                   rtol=1e-5, atol=1e-5)

    # the fast path's vision call on the tiny checkpoint: the kernel in every layer, transformers' features
    loaded = load_model(sys.argv[1], device="cpu")
    from kimi_cli.bench.ttft import QUESTION
    from kimi_cli.conversation import Message
    from kimi_cli.media.types import ImagePart, TextPart
    from kimi_cli.model.prompt import build_prompt
    parts = [ImagePart(Image.radial_gradient("L").resize(s).convert("RGB"), f"{i}.png")
             for i, s in enumerate([(448, 300), (200, 520), (64, 64)])]
    prompt = build_prompt([Message("user", (*parts, TextPart(QUESTION)))], loaded.tokenizer, loaded.processor_config)
    _, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
    pv, grid = suffix_images(prompt, runs, 0, "cpu", loaded.model.dtype)
    host = suffix_grid(prompt, runs, 0)
    calls = []
    real = va.attention
    va.attention = lambda *a, **kw: calls.append(a[4]) or real(*a, **kw)
    with torch.inference_mode():
        theirs = fastpath.image_features(loaded.model, pv, grid, host, fused_attention=False)
        assert not calls
        ours = fastpath.image_features(loaded.model, pv, grid, host, fused_attention=True)
    layers = len(loaded.model.model.vision_tower.layers)
    assert calls == [int(host.prod(axis=1).max())] * layers, (calls, layers)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    print("vision attention ok")
""")


@pytest.mark.slow
@NEEDS_TRITON
def test_vision_attention_in_the_triton_interpreter(tiny_checkpoint):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED, str(tiny_checkpoint)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "vision attention ok" in proc.stdout


@pytest.mark.parametrize(("d", "split"), [(72, (64, 16)), (64, (64, 0)), (80, (64, 16)), (96, (64, 32)),
                                          (128, (128, 0)), (136, (128, 16)), (16, (16, 0))])
def test_the_head_is_split_into_two_products(d, split):
    assert va.split_head(d) == split
    d0, d1 = split
    assert d0 + d1 >= d and d0 & (d0 - 1) == 0


@pytest.mark.parametrize(("d", "ok"), [(72, True), (64, True), (16, True), (256, True), (8, False), (70, False),
                                       (264, False)])
def test_supported_heads(d, ok):
    assert va.supported(d) is ok


def test_cpu_vision_is_untouched_by_the_patch(tiny_model):
    """Outside the interpreter, CPU tensors take transformers' own attention inside the patch: the same bits."""
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    attn = tiny_model.model.model.vision_tower.layers[0].attn
    x = torch.randn(50, attn.dim, generator=torch.Generator().manual_seed(1))
    cos, sin = torch.rand(50, attn.head_dim), torch.rand(50, attn.head_dim)
    cu = torch.tensor([0, 20, 50], dtype=torch.int32)
    with torch.inference_mode():
        plain = attn(x, cu_seqlens=cu, position_embeddings=(cos, sin))
        with va.patched() as active:
            assert (kimi_k25.Kimi_K25VisionAttention.forward is va._forward) is active
            ours = attn(x, cu_seqlens=cu, position_embeddings=(cos, sin), max_seqlen=30)
    assert torch.equal(plain, ours)
    assert kimi_k25.Kimi_K25VisionAttention.forward is va.original()


def test_the_patch_is_scoped_reentrant_and_undone_after_an_error():
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    before = kimi_k25.Kimi_K25VisionAttention.forward
    with pytest.raises(RuntimeError), va.patched() as active:
        with va.patched():
            assert (kimi_k25.Kimi_K25VisionAttention.forward is va._forward) is active
        assert (kimi_k25.Kimi_K25VisionAttention.forward is va._forward) is active
        assert va.original() is before
        raise RuntimeError("out of memory in the tower")
    assert kimi_k25.Kimi_K25VisionAttention.forward is before


@pytest.mark.skipif(not va.HAVE_TRITON, reason="the plan names Triton kernels")
def test_the_warm_up_plans_the_attention_kernel(monkeypatch):
    from kimi_cli.engine.fast import prewarm
    from kimi_cli.engine.fast.synthetic import text_config

    assert (prewarm.record_vision_attention(16, 72, torch.bfloat16) != []) is va.ENABLED
    monkeypatch.setattr(va, "ENABLED", True)
    (launch,) = prewarm.record_vision_attention(16, 72, torch.bfloat16)
    kw = dict(launch.kwargs)
    assert (launch.kernel, kw["D"], kw["D0"], kw["D1"], kw["TAIL"]) == ("_vision_attn_kernel", 72, 64, 16, True)
    # the strides of [positions, 16, 72] contiguous, as Triton specialises them
    assert launch.args[5:9] == (16 * 72,) * 4
    assert prewarm.record_vision_attention(16, 70, torch.bfloat16) == []
    shape = prewarm.ModelShape(text_config("tiny"), torch.bfloat16, "bf16", vision_heads=16, vision_head_dim=72)
    assert launch.variant() in {la.variant() for la in prewarm.plan(shape, [1024])}


@pytest.mark.skipif(not va.HAVE_TRITON, reason="needs Triton")
@pytest.mark.parametrize("head_dim", [72, 64])
def test_the_kernel_compiles_for_hopper_without_a_gpu(head_dim, monkeypatch):
    """Triton's interpreter runs what its compiler may refuse (it checks types less): the planned
    launch's variant compiled for sm_90 to a cubin, on any machine."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kimi_cli.engine.fast import prewarm

    monkeypatch.setattr(va, "ENABLED", True)
    (launch,) = prewarm.record_vision_attention(16, head_dim, torch.bfloat16)
    fn = va._vision_attn_kernel

    def kind(a):
        if isinstance(a, prewarm.TensorSpec):
            return "*" + {torch.bfloat16: "bf16", torch.int32: "i32"}[a.dtype]
        return "fp32" if isinstance(a, float) else "i32"

    kwargs = dict(launch.kwargs)
    options = {"num_warps": kwargs.pop("num_warps"), "num_stages": kwargs.pop("num_stages")}
    signature = dict(zip(fn.arg_names, [kind(a) for a in launch.args] + ["constexpr"] * len(kwargs), strict=True))
    compiled = triton.compile(ASTSource(fn, signature, kwargs), target=GPUTarget("cuda", 90, 128), options=options)
    assert compiled.asm["cubin"] and compiled.metadata.shared <= 227 * 1024


@pytest.mark.gpu
@pytest.mark.skipif(not va.HAVE_TRITON, reason="needs Triton")
def test_gpu_attention_is_as_close_to_float32_as_sdpa():
    """bf16 on the GPU, one 1792x1792 image's sequence plus two short ones packed: the kernel's error
    against float32 attention is no larger than torch's SDPA's (cuDNN's or flash's) on the same inputs."""
    import torch.nn.functional as F

    gen = torch.Generator(device="cuda").manual_seed(0)
    lens = [16384, 700, 33]
    n, h, d = sum(lens), 4, 72
    q, k, v = (torch.randn(n, h, d, device="cuda", generator=gen).bfloat16() for _ in range(3))
    cu = torch.tensor([0, lens[0], lens[0] + lens[1], n], dtype=torch.int32, device="cuda")
    with torch.inference_mode():
        ours = va.attention(q, k, v, cu, max(lens), d ** -0.5).float()
        ref = va.reference(q, k, v, cu.cpu(), d ** -0.5).float()
        bounds = cu.tolist()
        sdpa = torch.cat([F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1)[None] for t in (q, k, v)))[0]
                          .transpose(0, 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]).float()
    err = float((ours - ref).norm() / ref.norm())
    floor = float((sdpa - ref).norm() / ref.norm())
    assert err <= 1.25 * floor + 1e-4, (err, floor)
    assert float((ours - ref).abs().max()) <= 2 * float((sdpa - ref).abs().max()) + 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not va.HAVE_TRITON, reason="needs Triton")
def test_gpu_vision_features_with_the_kernel_match_transformers(tiny_checkpoint):
    """The fast path's vision call on the GPU in bf16 (the tiny checkpoint, three images): the features
    with the kernel against transformers' SDPA, within bf16's noise."""
    from PIL import Image

    from kimi_cli.bench.ttft import QUESTION
    from kimi_cli.conversation import Message
    from kimi_cli.engine import fastpath
    from kimi_cli.engine.plain import prompt_keys, suffix_grid, suffix_images
    from kimi_cli.media.types import ImagePart, TextPart
    from kimi_cli.model.checkpoint import load_model
    from kimi_cli.model.prompt import build_prompt

    loaded = load_model(str(tiny_checkpoint), device="cuda", dtype="bfloat16")
    parts = [ImagePart(Image.radial_gradient("L").resize(s).convert("RGB"), f"{i}.png")
             for i, s in enumerate([(896, 672), (200, 520), (64, 64)])]
    prompt = build_prompt([Message("user", (*parts, TextPart(QUESTION)))], loaded.tokenizer,
                          loaded.processor_config)
    _, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
    pv, grid = suffix_images(prompt, runs, 0, "cuda", loaded.model.dtype)
    host = suffix_grid(prompt, runs, 0)
    with torch.inference_mode():
        theirs = fastpath.image_features(loaded.model, pv, grid, host, fused_attention=False).float()
        ours = fastpath.image_features(loaded.model, pv, grid, host, fused_attention=True).float()
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < 2e-2, rel
