"""Weight formats: round-trip error bounds, DeepSeek-V3's fp8 block-scale layout, int4 packing."""

from __future__ import annotations

import pytest
import torch

from kimi_cli.model.formats import FORMAT_NAMES, get_format, is_quantized
from kimi_cli.model.formats.int4 import pack, unpack


def _weight(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.mark.parametrize("name", FORMAT_NAMES)
@pytest.mark.parametrize("shape", [(64, 64), (300, 200), (3, 96, 260)])
def test_stored_shapes_and_bytes_agree(name, shape):
    fmt = get_format(name)
    parts = fmt.quantize(_weight(*shape))
    assert set(parts) == set(fmt.info.parts)
    assert sum(t.numel() * t.element_size() for t in parts.values()) == fmt.bytes_for(shape)
    empty = fmt.empty(shape, "cpu")
    assert {k: (v.shape, v.dtype) for k, v in empty.items()} == {k: (v.shape, v.dtype) for k, v in parts.items()}
    assert fmt.dequantize(parts, torch.float32).shape == shape


# Worst-case error per element, relative to the largest magnitude of its row / block / group.
BOUNDS = {"bf16": 2**-8, "int8": 0.5 / 127 + 1e-6, "fp8": 2**-4, "int4": 0.5 / 7 + 1e-6}


@pytest.mark.parametrize("name", FORMAT_NAMES)
def test_round_trip_error_is_bounded(name):
    fmt = get_format(name)
    w = _weight(256, 384, seed=1)
    back = fmt.dequantize(fmt.quantize(w), torch.float32)
    # every format's scale group is within one row of 128 columns (or finer): bound per that group
    groups = w.abs().reshape(256, 3, 128).amax(-1, keepdim=True)
    if name == "fp8":
        groups = w.abs().reshape(2, 128, 3, 128).amax((1, 3), keepdim=True).expand(2, 128, 3, 1).reshape(256, 3, 1)
    if name == "int8":
        groups = w.abs().amax(-1, keepdim=True).reshape(256, 1, 1).expand(256, 3, 1)
    err = (back - w).abs().reshape(256, 3, 128)
    assert (err <= groups * BOUNDS[name]).all()


def test_mean_relative_error_orders_the_formats():
    w = _weight(512, 512, seed=2)
    rel = {}
    for name in FORMAT_NAMES:
        fmt = get_format(name)
        rel[name] = ((fmt.dequantize(fmt.quantize(w), torch.float32) - w).norm() / w.norm()).item()
    assert rel["bf16"] < rel["int8"] < rel["fp8"] < rel["int4"] < 0.2
    assert rel["int8"] < 0.01


def test_fp8_scales_follow_deepseek_v3_weight_scale_inv():
    """float32 [ceil(N/128), ceil(K/128)], multiplied into the weight, block amax maps to 448."""
    fmt = get_format("fp8")
    w = _weight(300, 200)
    parts = fmt.quantize(w)
    q, s = parts["weight"], parts["weight_scale_inv"]
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.shape == (3, 2)
    for bn, bk in [(0, 0), (2, 1), (1, 0)]:
        block = w[bn * 128:(bn + 1) * 128, bk * 128:(bk + 1) * 128]
        assert s[bn, bk].item() == pytest.approx(block.abs().max().item() / 448.0, rel=1e-6)
        qb = q[bn * 128:(bn + 1) * 128, bk * 128:(bk + 1) * 128].float()
        assert qb.abs().max().item() == 448.0
        torch.testing.assert_close(qb * s[bn, bk], block, atol=block.abs().max().item() / 16, rtol=0)


def test_int4_packs_two_nibbles_a_byte_low_first():
    q = torch.tensor([[-8, 7, 0, -1]])
    packed = pack(q)
    assert packed.dtype == torch.uint8 and packed.tolist() == [[0 | (15 << 4), 8 | (7 << 4)]]
    assert unpack(packed, 4).tolist() == q.tolist()


def test_int4_groups_of_128_with_a_partial_last_group():
    fmt = get_format("int4")
    w = _weight(4, 200)
    w[0, 130] = 1.0  # only the second group of row 0 gets a large scale
    parts = fmt.quantize(w)
    assert parts["weight"].shape == (4, 100) and parts["weight_scale"].shape == (4, 2)
    assert parts["weight_scale"][0, 1].item() == pytest.approx(1.0 / 7)
    assert parts["weight_scale"][0, 0].item() < 0.02
    with pytest.raises(ValueError, match="odd"):
        fmt.quantize(_weight(4, 3))


def test_int8_is_per_output_channel():
    fmt = get_format("int8")
    w = _weight(8, 64)
    w[3] *= 100
    parts = fmt.quantize(w)
    assert parts["weight"].dtype == torch.int8 and parts["weight_scale"].shape == (8,)
    assert parts["weight"].abs().amax(-1).tolist() == [127] * 8


def test_formats_apply_by_compute_capability():
    assert get_format("fp8").info.applies((8, 6)) is not None
    assert "8.9" in get_format("fp8").info.applies((8, 0))
    assert get_format("fp8").info.applies((9, 0)) is None
    assert all(get_format(n).info.applies((7, 5)) is None for n in ("bf16", "int8", "int4"))


@pytest.mark.parametrize(("name", "converted"), [
    ("language_model.model.layers.0.self_attn.q_proj.weight", True),
    ("language_model.model.layers.3.self_attn.kv_b_proj.weight", True),
    ("language_model.model.layers.0.mlp.down_proj.weight", True),
    ("language_model.model.layers.5.mlp.experts.63.up_proj.weight", True),
    ("language_model.model.layers.5.mlp.shared_experts.gate_proj.weight", True),
    ("language_model.model.layers.5.mlp.gate.weight", False),
    ("language_model.model.layers.5.self_attn.kv_a_layernorm.weight", False),
    ("language_model.model.embed_tokens.weight", False),
    ("language_model.lm_head.weight", False),
    ("vision_tower.encoder.blocks.0.mlp.fc1.weight", False),
    ("multi_modal_projector.linear_1.weight", False),
])
def test_which_tensors_are_converted(name, converted):
    assert is_quantized(name) is converted
