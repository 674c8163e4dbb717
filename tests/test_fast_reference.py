"""The pure-torch decode operations against the transformers modules they replace (float32, CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import DynamicCache  # noqa: E402

from kimi_cli.engine.fast import reference as ref  # noqa: E402
from kimi_cli.engine.fast.synthetic import build_model  # noqa: E402
from kimi_cli.engine.fast.weights import extract  # noqa: E402
from kimi_cli.model.compat import cache_kwarg  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return build_model("tiny", seed=1)


@pytest.fixture(scope="module")
def weights(model):
    return extract(model.model, model.lm_head)


def test_rope_table_matches_rotary_embedding(model, weights):
    pos = torch.arange(50).unsqueeze(0)
    cos, sin = model.model.rotary_emb(torch.zeros(1, dtype=torch.float32), pos)
    table = ref.rope_table(weights.inv_freq, weights.rope_scale, 50, torch.float32)
    half = cos.shape[-1] // 2
    torch.testing.assert_close(table[0], cos[0, :, :half])
    torch.testing.assert_close(table[1], sin[0, :, :half])


@torch.no_grad()
@pytest.mark.parametrize("length", [1, 5, 33])
def test_absorbed_attention_matches_the_module(model, weights, length):
    layer = model.model.layers[1].self_attn
    aw = weights.layers[1].attn
    h = torch.randn(1, length, model.config.hidden_size)
    pos_ids = torch.arange(length).unsqueeze(0)
    cos, sin = model.model.rotary_emb(h, pos_ids)
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
    expected, _ = layer(h, (cos, sin), mask, **cache_kwarg(layer, DynamicCache(config=model.config)))
    table = ref.rope_table(weights.inv_freq, weights.rope_scale, 64, torch.float32)
    c = torch.zeros(64, weights.kv_lora)
    k = torch.zeros(64, weights.rope_dim)
    for t in range(length):
        pos = torch.tensor([t])
        cs = table.index_select(1, pos)
        ref.write_latent(h[:, t], aw, c, k, pos, cs[0], cs[1])
    q_lat, q_pe = ref.absorbed_query(h[:, -1], aw, cs[0], cs[1])
    o_lat = ref.latent_attention(q_lat, q_pe, c, k, pos, 64, aw.scaling)
    torch.testing.assert_close(ref.attention_output(o_lat, aw), expected[:, -1], rtol=1e-5, atol=1e-5)


def test_scaling_is_q_head_dim_to_the_minus_half(weights):
    assert weights.layers[0].attn.scaling == pytest.approx((32 + 16) ** -0.5)


@torch.no_grad()
def test_router_matches_topk_router(model, weights):
    gate = model.model.layers[2].mlp.gate
    mw = weights.layers[2].mlp
    for seed in range(10):
        h = torch.randn(1, model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
        _, w_ref, idx_ref = gate(h)
        w, idx = ref.route(h, mw)
        order = torch.argsort(idx)
        ref_order = torch.argsort(idx_ref[0])
        assert idx[order].tolist() == idx_ref[0][ref_order].tolist()
        torch.testing.assert_close(w[order], w_ref[0][ref_order])


@torch.no_grad()
def test_experts_reference_matches_moe_module(model, weights):
    moe = model.model.layers[1].mlp
    mw = weights.layers[1].mlp
    for seed in range(5):
        h = torch.randn(1, 1, model.config.hidden_size, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(ref.moe(h[0], mw), moe(h)[0], rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_experts_read_the_fused_parameters_in_place(model, weights):
    mw = weights.layers[1].mlp
    experts = model.model.layers[1].mlp.experts
    assert mw.gate_up.data_ptr() == experts.gate_up_proj.data_ptr()
    assert mw.down.data_ptr() == experts.down_proj.data_ptr()
    kv_b = model.model.layers[1].self_attn.kv_b_proj.weight
    assert weights.layers[1].attn.w_uk.data_ptr() == kv_b.data_ptr()


def test_dense_layer_zero_is_plain_mlp(model, weights):
    h = torch.randn(1, model.config.hidden_size)
    with torch.no_grad():
        expected = model.model.layers[0].mlp(h)
    torch.testing.assert_close(ref.dense_mlp(h, weights.layers[0].mlp), expected)
