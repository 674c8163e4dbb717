"""The prefill's kernels (`engine/fast/prefill_kernels.py`) against the transformers modules they stand in
for: in Triton's interpreter on the CPU (float32, where the arithmetic must agree to rounding), on a GPU
in bf16 (gpu marker), and the patch's scope everywhere (the CPU and the plain path never change)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kimi_cli.engine.fast import prefill_kernels as pk

NEEDS_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

#: Run in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before Triton is imported).
INTERPRETED = textwrap.dedent("""
    import sys, torch
    from kimi_cli.engine.fast import FastDecoder, prefill_kernels as pk
    from kimi_cli.model.checkpoint import load_model
    from transformers.integrations.moe import grouped_mm_experts_forward
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds
    import torch.nn.functional as F

    torch.manual_seed(0)
    loaded = load_model(sys.argv[1], device="cpu")
    model = loaded.model
    lm = model.model.language_model
    assert model.dtype == torch.float32

    # each kernel against the code it replaces, on shapes that are not multiples of the blocks
    wide = torch.randn(37, 576)
    norm = ds.DeepseekV3RMSNorm(512, eps=1e-6)
    norm.weight.data = torch.randn(512)
    torch.testing.assert_close(pk.rms_norm(wide[:, :512], norm.weight, 1e-6), norm(wide[:, :512]))
    gate_up = torch.randn(53, 2 * 1408) * 3
    torch.testing.assert_close(pk.silu_mul(gate_up[:, :1408], gate_up[:, 1408:]),
                               F.silu(gate_up[:, :1408]) * gate_up[:, 1408:])
    experts = lm.layers[-1].mlp.experts
    hidden = torch.randn(50, lm.config.hidden_size)
    k = lm.config.num_experts_per_tok
    index = torch.stack([torch.randperm(experts.num_experts)[:k] for _ in range(50)])
    weights = torch.rand(50, k)
    torch.testing.assert_close(pk.experts_forward(experts, hidden, index, weights),
                               grouped_mm_experts_forward(experts, hidden, index, weights))

    # the whole prefill, with and without them: same logits, same latent cache
    embeds = torch.randn(1, 300, lm.config.hidden_size) * 0.5
    results = []
    for fused in (False, True):
        dec = FastDecoder(lm, model.lm_head, 1024, "cpu", torch.float32, fused_prefill=fused)
        results.append((dec.prefill(embeds), dec.cache.c[:, :300].clone(), dec.cache.k[:, :300].clone()))
    for plain, ours in zip(*results):
        torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)

    # and the fused prefill did go through them: one weighted sum per MoE layer, one SwiGLU per MLP
    # (the dense layers', the shared experts') and per MoE layer's routed experts
    calls = {"combine": 0, "silu_mul": 0}
    for name in calls:
        def counted(*a, _f=getattr(pk, name), _n=name, **kw):
            calls[_n] += 1
            return _f(*a, **kw)
        setattr(pk, name, counted)
    FastDecoder(lm, model.lm_head, 1024, "cpu", torch.float32).prefill(embeds)
    moe_layers = sum(hasattr(layer.mlp, "experts") for layer in lm.layers)
    assert calls["combine"] == moe_layers > 0, (calls, moe_layers)
    assert calls["silu_mul"] == len(lm.layers) + moe_layers, (calls, len(lm.layers))
    print("prefill kernels ok")
""")


@pytest.mark.slow
@NEEDS_TRITON
def test_prefill_kernels_in_the_triton_interpreter(tiny_checkpoint):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED, str(tiny_checkpoint)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "prefill kernels ok" in proc.stdout


def test_cpu_prefill_is_untouched_by_the_patch(tiny_model):
    """Outside the interpreter, CPU tensors take transformers' own code inside the patch: the same bits."""
    from kimi_cli.engine.fast import FastDecoder

    lm = tiny_model.model.model.language_model
    embeds = torch.randn(1, 40, lm.config.hidden_size, generator=torch.Generator().manual_seed(1))
    out = [FastDecoder(lm, tiny_model.model.lm_head, 1024, "cpu", tiny_model.model.dtype,
                       fused_prefill=fused).prefill(embeds) for fused in (False, True)]
    assert torch.equal(out[0], out[1])


def test_the_patch_is_scoped_and_undone(tiny_model):
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    lm = tiny_model.model.model.language_model
    before = (ds.DeepseekV3RMSNorm.forward, ds.DeepseekV3MLP.forward, lm.config._experts_implementation)
    with pk.patched(lm) as active:
        with pk.patched(lm):
            assert (ds.DeepseekV3RMSNorm.forward is pk._rms_forward) is active
        inside = (ds.DeepseekV3MLP.forward, lm.config._experts_implementation)
        assert (inside == (pk._mlp_forward, pk.IMPLEMENTATION)) is active
        if active:
            assert ALL_EXPERTS_FUNCTIONS.get_interface(pk.IMPLEMENTATION, None) is pk.experts_forward
    assert (ds.DeepseekV3RMSNorm.forward, ds.DeepseekV3MLP.forward, lm.config._experts_implementation) == before


def test_an_error_inside_the_patch_still_restores_it(tiny_model):
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    lm = tiny_model.model.model.language_model
    before = ds.DeepseekV3RMSNorm.forward
    with pytest.raises(RuntimeError), pk.patched(lm):
        raise RuntimeError("out of memory in a prefill")
    assert ds.DeepseekV3RMSNorm.forward is before and lm.config._experts_implementation == "grouped_mm"


@pytest.mark.skipif(not pk.HAVE_TRITON, reason="the plan names Triton kernels")
def test_the_warm_up_plans_the_prefill_kernels():
    from kimi_cli.engine.fast import prewarm
    from kimi_cli.engine.fast.synthetic import text_config

    cfg = text_config("full")
    bf16 = prewarm.record_prefill(cfg, torch.bfloat16, "bf16")
    widths = sorted(dict(la.kwargs)["N"] for la in bf16 if la.kernel == "_silu_mul_kernel")
    assert widths == sorted({cfg.moe_intermediate_size, cfg.moe_intermediate_size * cfg.n_shared_experts,
                             cfg.intermediate_size})
    assert [dict(la.kwargs)["TOP_K"] for la in bf16 if la.kernel == "_combine_kernel"] == [cfg.num_experts_per_tok]
    norms = sorted(dict(la.kwargs)["N"] for la in bf16 if la.kernel == "_rms_rows_kernel")
    assert norms == [cfg.kv_lora_rank, cfg.hidden_size]
    # quantized experts are our own module: no routed SwiGLU or weighted sum of these kernels
    int8 = {la.kernel for la in prewarm.record_prefill(cfg, torch.bfloat16, "int8")}
    assert "_combine_kernel" not in int8 and "_rms_rows_kernel" in int8
    planned = {la.variant() for la in prewarm.plan(prewarm.ModelShape(cfg, torch.bfloat16, "bf16"), [1024])}
    assert {la.variant() for la in bf16} <= planned


@pytest.mark.gpu
@pytest.mark.skipif(not pk.HAVE_TRITON, reason="needs Triton")
def test_gpu_kernels_round_as_transformers_does():
    """bf16 on the GPU: the SwiGLU bit for bit; the norm and the experts within a rounding, in few elements."""
    import torch.nn.functional as F
    from transformers.integrations.moe import grouped_mm_experts_forward
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    from kimi_cli.engine.fast.synthetic import text_config

    gen = torch.Generator(device="cuda").manual_seed(0)
    gate_up = (torch.randn(4147, 2 * 1408, device="cuda", generator=gen) * 3).bfloat16()
    ours = pk.silu_mul(gate_up[:, :1408], gate_up[:, 1408:])
    assert torch.equal(ours, F.silu(gate_up[:, :1408]) * gate_up[:, 1408:])
    x = torch.randn(1, 4147, 2048, device="cuda", generator=gen).bfloat16()
    norm = ds.DeepseekV3RMSNorm(2048).cuda().bfloat16()
    norm.weight.data.normal_(generator=gen)
    with torch.no_grad():
        ref, got = norm(x).float(), pk.rms_norm(x, norm.weight, norm.variance_epsilon).float()
    # the float32 mean is summed in another order: where that moves the normalised value across a
    # bf16 rounding boundary, the rounding and then the product with the weight differ, 2 ulps at most
    assert float(((got - ref).abs() / ref.abs().clamp_min(1e-3)).max()) <= 2 ** -6
    assert float((got != ref).float().mean()) < 0.01
    cfg = text_config("tiny")
    experts = ds.DeepseekV3Experts(cfg).cuda().bfloat16()
    experts.gate_up_proj.data.normal_(std=0.05, generator=gen)
    experts.down_proj.data.normal_(std=0.05, generator=gen)
    hidden = torch.randn(999, cfg.hidden_size, device="cuda", generator=gen).bfloat16()
    k = cfg.num_experts_per_tok
    index = torch.rand(999, experts.num_experts, device="cuda", generator=gen).topk(k).indices
    weights = torch.rand(999, k, device="cuda", generator=gen)
    with torch.no_grad():
        ours = pk.experts_forward(experts, hidden, index, weights).float()
        theirs = grouped_mm_experts_forward(experts, hidden, index, weights).float()
    # the same products; the six weighted rows are summed in float32 in another order than torch's
    # reduction, which moves a sum across a bf16 rounding boundary now and then
    assert float(((ours - theirs).abs() / theirs.abs().clamp_min(1e-2)).max()) <= 2 ** -7
    assert float((ours != theirs).float().mean()) < 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not pk.HAVE_TRITON, reason="needs Triton")
def test_gpu_prefill_with_the_kernels_matches_transformers():
    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model

    model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=0)
    gen = torch.Generator(device="cuda").manual_seed(0)
    embeds = torch.randn(1, 700, model.config.hidden_size, device="cuda", generator=gen).bfloat16()
    logits = [FastDecoder(model.model, model.lm_head, 1024, "cuda", torch.bfloat16,
                          fused_prefill=fused).prefill(embeds) for fused in (False, True)]
    rel = float((logits[1] - logits[0]).norm() / logits[0].norm())
    assert rel < 2e-2 and int(logits[1].argmax()) == int(logits[0].argmax()), rel
