"""Kernel warm-up: the launches planned from a config are the very launches the decode step makes.

On the CPU the step runs with its kernel modules swapped for recorders (nothing launches), over the
tiny checkpoint as loaded and over `prewarm.meta_weights` of its config: the kernels, constexprs,
warps and what Triton specialises on (pointer dtypes and 16-byte alignment, ints being 1 or a multiple
of 16) must agree. On a GPU (`gpu` marker) the warm-up must leave the first capture nothing to compile.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kimi_cli.app.warmup import model_shape  # noqa: E402
from kimi_cli.engine.fast import prewarm  # noqa: E402
from kimi_cli.engine.fast.weights import extract  # noqa: E402

FORMATS = ["bf16", "int8", "fp8", "int4"]


@pytest.fixture(scope="module", params=FORMATS)
def loaded(request, tiny_checkpoint):
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(tiny_checkpoint), device="cpu", dtype="bfloat16", quantize=request.param)


def _variants(launches):
    return {launch.variant() for launch in launches}


@pytest.mark.parametrize("max_len", [1024, 2048, 17408, 40960, 131072])
def test_planned_launches_are_the_steps_launches(loaded, max_len):
    lm = loaded.model.model.language_model
    real = prewarm.record_step(extract(lm, loaded.model.lm_head), max_len, torch.bfloat16)
    shape = model_shape(loaded.checkpoint, torch.bfloat16, loaded.weight_format)
    planned = prewarm.plan(prewarm.ModelShape(shape.text_config, shape.dtype, shape.fmt), [max_len])
    assert _variants(real) == _variants(planned)
    kernels = {launch.kernel for launch in real}
    assert {"mla_split_kernel", "mla_combine_kernel", "latent_prep_kernel"} <= kernels
    if loaded.weight_format != "bf16":
        assert {"qgemv2_kernel", "qexperts_up_kernel", "qexperts_down_kernel"} <= kernels


@pytest.mark.parametrize(("max_lens", "iters"), [
    ([1024], {1}),
    ([16384, 17408], {1, 2}),
    ([33792, 66560, 131072], {4, 8}),
])
def test_buckets_differ_only_in_the_attention_trip_count(max_lens, iters):
    from kimi_cli.engine.fast.synthetic import text_config

    launches = prewarm.plan(prewarm.ModelShape(text_config("full"), torch.bfloat16, "bf16"), max_lens)
    split = [dict(launch.kwargs)["ITERS"] for launch in launches if launch.kernel == "mla_split_kernel"]
    assert set(split) == iters and len(split) == len(iters)


def test_ints_and_pointers_are_specialised_as_triton_does():
    spec = prewarm._spec
    assert spec(1) != spec(17) != spec(32)
    assert spec(32) == spec(2048) != spec(2**33)
    assert spec(prewarm.TensorSpec(torch.bfloat16, 0)) == spec(prewarm.TensorSpec(torch.bfloat16, 512))
    assert spec(prewarm.TensorSpec(torch.bfloat16, 8)) != spec(prewarm.TensorSpec(torch.bfloat16, 0))
    assert spec(0.5) == spec(1e-6)


def test_vision_rope_launch_is_recorded():
    (launch,) = prewarm.record_vision_rope(16, 72, torch.bfloat16)
    assert launch.kernel == "_rope_kernel" and dict(launch.kwargs)["D"] == 72


def test_wait_pending_returns_once_jobs_are_done():
    done = []
    job = prewarm.start(lambda: done.append(1) or prewarm.WarmResult(0, 0.0, False))
    prewarm.wait_pending()
    assert done == [1] and job.result == prewarm.WarmResult(0, 0.0, False)
    failing = prewarm.start(lambda: 1 / 0)
    prewarm.wait_pending()  # a failed warm-up only means the kernels compile on first use
    assert failing.result is None and isinstance(failing.error, ZeroDivisionError)


#: On the H200 (2026-12-02, Triton 3.6) the quantized steps' first capture after the warm-up still
#: compiled 5 variants (qgemv2 x3, qexperts_up, qexperts_down) although the planned launches cover the
#: step's recorded ones: Triton's key for them holds something `Launch.variant` does not. Strict, so
#: the fix shows up as an unexpected pass.
QUANT_GAP = pytest.mark.xfail(strict=True, reason="quantized kernels' warm-up variants miss Triton's key")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", [f if f == "bf16" else pytest.param(f, marks=QUANT_GAP) for f in FORMATS])
def test_warm_up_leaves_the_first_capture_nothing_to_compile(tiny_checkpoint, fmt, tmp_path, monkeypatch):
    """After `prewarm.warm`, a decoder's prefill, capture and replays compile no Triton kernel."""
    import triton

    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.engine.fast.vision_rope import fused_rope
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_modules

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # a cold cache: everything compiles here
    model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=0)  # Triton-sized shapes
    if fmt != "bf16":
        quantize_modules(model.model, get_format(fmt))
    shape = prewarm.ModelShape(model.config, torch.bfloat16, fmt, vision_heads=4, vision_head_dim=64)
    result = prewarm.warm(shape, [1024, 2048])
    planned = prewarm.plan(shape, [1024, 2048])
    real = prewarm.record_step(extract(model.model, model.lm_head), 1024, torch.bfloat16)
    missing = {launch.variant() for launch in real} - {launch.variant() for launch in planned}
    assert not missing, missing
    assert result.first_run and result.variants > 10
    compiled = []
    monkeypatch.setattr(triton.knobs.runtime, "jit_post_compile_hook", lambda **kw: compiled.append(kw["repr"]))
    for max_len in (1024, 2048):
        dec = FastDecoder(model.model, model.lm_head, max_len, "cuda", torch.bfloat16)
        assert dec.backend == "triton"
        logits = dec.prefill(model.model.embed_tokens(torch.tensor([[1, 2, 3]], device="cuda")))
        list(dec.generate_tokens(logits, None, 4))
    q = torch.randn(1, 64, 4, 64, device="cuda", dtype=torch.bfloat16)
    table = torch.randn(64, 64, device="cuda")
    fused_rope(q, q.clone(), table, table)
    assert compiled == [], "\n".join(compiled)
