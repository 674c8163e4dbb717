"""Kernel warm-up: the launches planned from a config are the very launches the decode step makes.

On the CPU the step runs with its kernel modules swapped for recorders (nothing launches), over the
tiny checkpoint as loaded and over `prewarm.meta_weights` of its config: the kernels, constexprs,
warps and what Triton specialises on (pointer dtypes and 16-byte alignment, ints being 1 or a multiple
of 16) must agree, and so must the cache key Triton itself computes for each launch (where Triton is
installed). On a GPU (`gpu` marker) the warm-up must leave the first capture nothing to compile.
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
    # the plan also holds the prefill's kernels (`test_fast_prefill.py`, `test_fast_dequant.py` check those)
    assert _variants(real) == _variants(la for la in planned if la.module not in ("prefill_kernels", "dequant_kernels"))
    kernels = {launch.kernel for launch in real}
    assert {"mla_split_kernel", "mla_combine_kernel", "latent_prep_kernel"} <= kernels
    if loaded.weight_format != "bf16":
        assert {"qgemv2_kernel", "qexperts_up_kernel", "qexperts_down_kernel"} <= kernels


@pytest.mark.parametrize("pdl", [False, True])
def test_planned_launches_hit_tritons_own_cache_keys(loaded, pdl, monkeypatch):
    """The key each planned launch compiles under (as `Launch.compile` hands it to `warmup`) is the key
    the real step's launch looks up, computed by Triton itself for an H100/H200 target: its
    specialisation of every argument and the launch options as passed (their order is part of the
    in-process key; a sorted replay missed every kernel with two options on an H200)."""
    from importlib import import_module

    jit = pytest.importorskip("triton.runtime.jit")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    from kimi_cli.engine.fast import step as step_module

    backend = make_backend(GPUTarget("cuda", 90, 32))

    def key(module: str, kernel: str, args, kwargs) -> str:
        fn = getattr(import_module(f"kimi_cli.engine.fast.{module}"), kernel)
        binder = jit.create_function_from_signature(fn.signature, fn.params, backend)
        kwargs = {**kwargs, "debug": False, "instrumentation_mode": ""}  # what `JITFunction.run` adds
        _, spec, options = binder(*args, **kwargs)
        return jit.compute_cache_key({}, spec, options)

    monkeypatch.setattr(step_module, "pdl_default", lambda device: pdl)
    lm = loaded.model.model.language_model
    shape = model_shape(loaded.checkpoint, torch.bfloat16, loaded.weight_format)
    planned = {key(la.module, la.kernel, [jit.MockTensor.wrap_dtype(a) for a in la.warmup_args()[0]],
                   la.warmup_args()[1])
               for la in prewarm.plan(prewarm.ModelShape(shape.text_config, shape.dtype, shape.fmt), [1024])}

    class Raw:  # the step's kernel calls exactly as made: real tensors, keywords in the call's order
        def __init__(self, module: str, sink: list) -> None:
            self.module, self.sink = module, sink

        def __getattr__(self, kernel: str):
            module, sink = self.module, self.sink

            class Kernel:
                def __getitem__(self, grid):
                    return lambda *args, **kwargs: sink.append((module, kernel, args, kwargs))

            return Kernel()

    monkeypatch.setattr(prewarm, "Recorder", Raw)
    real = prewarm.record_step(extract(lm, loaded.model.lm_head), 1024, torch.bfloat16)
    assert len(real) > 10 and all(kwargs for *_, kwargs in real)
    missing = [kernel for module, kernel, args, kwargs in real if key(module, kernel, args, kwargs) not in planned]
    assert not missing, missing


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




@pytest.mark.gpu
#: (Until 2026-12-03 the quantized formats failed here: 5 variants compiled again on an H200, because
#: the plan replayed the launch options sorted and Triton's in-process key keeps their order; see
#: `test_planned_launches_hit_tritons_own_cache_keys`. Not yet run on a GPU since the fix.)
@pytest.mark.parametrize("fmt", FORMATS)
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
