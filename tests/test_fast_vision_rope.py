"""The fused vision rope against transformers' `apply_rotary_pos_emb_vision` (GPU with Triton)."""

from __future__ import annotations

import pytest
import torch

from kimi_cli.engine.fast import vision_rope


def _inputs(dtype: torch.dtype, positions: int = 1000, heads: int = 16, dim: int = 72):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(1, positions, heads, dim, device="cuda", generator=gen).to(dtype) for _ in range(2))
    angle = torch.rand(positions, dim, device="cuda", generator=gen) * 6.28
    return q, k, angle.cos(), angle.sin()


@pytest.mark.gpu
@pytest.mark.skipif(not vision_rope.HAVE_TRITON, reason="needs Triton")
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 2 ** -7)])
def test_fused_rope_matches_transformers(dtype, tol):
    from transformers.models.kimi_k25 import modeling_kimi_k25 as mod

    q, k, cos, sin = _inputs(dtype)
    with vision_rope.patched():
        original = vision_rope.original()
        ours_pair = mod.apply_rotary_pos_emb_vision(q, k, cos, sin)
    for ours, ref in zip(ours_pair, original(q, k, cos, sin), strict=True):
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        err = ((ours.float() - ref.float()).abs() / (ref.float().abs() + 1)).max()
        assert float(err) <= tol


def test_cpu_tensors_keep_the_original_rope():
    """On a CPU nothing is patched in a way that changes results (the CI path)."""
    from transformers.models.kimi_k25.modeling_kimi_k25 import apply_rotary_pos_emb_vision, rotate_half

    q, k = torch.randn(1, 10, 2, 8), torch.randn(1, 10, 2, 8)
    cos, sin = torch.rand(10, 8), torch.rand(10, 8)
    qe, ke = apply_rotary_pos_emb_vision(q, k, cos, sin)
    torch.testing.assert_close(qe, q * cos.unsqueeze(-2) + rotate_half(q) * sin.unsqueeze(-2))
    torch.testing.assert_close(ke, k * cos.unsqueeze(-2) + rotate_half(k) * sin.unsqueeze(-2))


def test_the_patch_is_scoped_and_undone():
    """transformers' function is ours only inside `patched()`, and the original again afterwards."""
    from transformers.models.kimi_k25 import modeling_kimi_k25 as mod

    before = mod.apply_rotary_pos_emb_vision
    with vision_rope.patched() as active:
        with vision_rope.patched():
            assert (mod.apply_rotary_pos_emb_vision is vision_rope.fused_rope) is active
        assert (mod.apply_rotary_pos_emb_vision is vision_rope.fused_rope) is active
    assert mod.apply_rotary_pos_emb_vision is before
