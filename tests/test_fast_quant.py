"""The fast decoder over quantized weights: the torch step on the CPU, the Triton kernels in Triton's
interpreter (when Triton is installed) and on a GPU (gpu marker), all against the reference path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kimi_cli.engine.fast import FastDecoder
from kimi_cli.engine.fast.quant_step import LAUNCH, MODES
from kimi_cli.engine.fast.weights import QMatrix

CHECK = Path(__file__).with_name("quant_step_check.py")


def _quantized(ckpt, fmt, device="cpu", dtype=None):
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(ckpt), device=device, dtype=dtype, quantize=fmt)


@pytest.mark.parametrize("fmt", ["int8", "fp8", "int4"])
def test_fast_decoder_matches_the_reference_forward(tiny_checkpoint, fmt):
    from transformers import DynamicCache

    from kimi_cli.model.compat import cache_kwarg

    model = _quantized(tiny_checkpoint, fmt).model
    lm = model.model.language_model
    dec = FastDecoder(lm, model.lm_head, 64, "cpu", torch.float32)
    assert isinstance(dec.weights.layers[1].mlp.up, QMatrix) and dec.backend == "torch"
    ids = torch.tensor([[5, 9, 31, 77, 120, 6, 2]])
    with torch.no_grad():
        cache = DynamicCache(config=model.config.text_config)
        out = model(input_ids=ids, **cache_kwarg(model, cache), use_cache=True)
        logits = dec.prefill(lm.embed_tokens(ids))
        torch.testing.assert_close(logits, out.logits[0, -1].float(), rtol=1e-4, atol=1e-4)
        for _ in range(5):
            token = out.logits[0, -1].argmax().view(1, 1)
            out = model(input_ids=token, **cache_kwarg(model, cache), use_cache=True)
            torch.testing.assert_close(dec.step(token.view(1)), out.logits[0, -1].float(), rtol=1e-4, atol=1e-4)


def test_long_prefills_run_in_chunks_with_the_same_result(tiny_checkpoint, monkeypatch):
    import kimi_cli.model.memory as memory

    model = _quantized(tiny_checkpoint, "int8").model
    lm = model.model.language_model
    embeds = lm.embed_tokens(torch.arange(3, 40).view(1, -1))
    with torch.no_grad():
        whole = FastDecoder(lm, model.lm_head, 64, "cpu", torch.float32).prefill(embeds)
        monkeypatch.setattr(memory, "PREFILL_CHUNK", 8)
        dec = FastDecoder(lm, model.lm_head, 64, "cpu", torch.float32)
        chunked = dec.prefill(embeds)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert dec.length == 37


def test_launch_shapes_are_fitted_to_each_format_and_mode():
    """`_launch` keeps what a format's kernels can run: whole 128-column scale groups for fp8 and int4,
    16 rows or more for the tensor-core mode, the word mode only over multiples of 8 columns."""
    from types import SimpleNamespace

    from kimi_cli.engine.fast.quant_step import LAUNCH, QuantLaunch, QuantTritonStep

    def fitted(fmt, la, *dims, ks=(2048,), down=0):
        return QuantTritonStep._launch(SimpleNamespace(launch={**LAUNCH, fmt: la}), fmt, *dims, ks=ks, down=down)

    d = fitted("int8", LAUNCH["int8"], 1408, 2048)
    assert (d.block_k, d.gemv_n, d.down_n, d.down_k) == (LAUNCH["int8"].block_k, 8, 32, LAUNCH["int8"].block_k)
    assert fitted("int8", QuantLaunch(mode=0, gemv_n=8, down_n=8)).gemv_n == 16
    assert fitted("int8", QuantLaunch(mode=0, gemv_n=8, down_n=8)).down_n == 16
    assert fitted("fp8", QuantLaunch(mode=1, block_k=256, down_k=384)).down_k == 384
    assert fitted("fp8", QuantLaunch(mode=1, block_k=200)).block_k == 128
    assert fitted("fp8", QuantLaunch(mode=1, block_n=256)).block_n == 128
    assert fitted("int4", QuantLaunch(mode=2, block_k=1024), ks=(2048, 1404)).mode == 1
    assert fitted("int8", QuantLaunch(mode=3), ks=(2048, 1404)).mode == 1  # both word modes
    assert fitted("int4", QuantLaunch(mode=3), ks=(2048, 1408)).mode == 3
    assert fitted("int4", QuantLaunch(mode=0)).mode == 1  # int4 may not use the tensor-core mode
    assert fitted("int8", QuantLaunch(block_n=64), 1440, 2048).block_n == 32  # the largest that divides both
    assert fitted("int8", QuantLaunch(down_n=64), down=1440).down_n == 32
    assert fitted("fp8", QuantLaunch(mode=1, gemv_n=256, down_n=256)).gemv_n == 128
    assert fitted("fp8", QuantLaunch(mode=1, gemv_n=256, down_n=256), down=2048).down_n == 128


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize(("fmt", "mode"), [(f, m) for f, modes in MODES.items() for m in modes])
def test_quantized_kernels_in_the_triton_interpreter(fmt, mode):
    """A process a format and mode: all in one ran past 20 minutes on 2 cores (int8 alone 12.5, int4
    alone past 20) once int8 and int4 had mode 3 and fp8 mode 2."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(CHECK), "cpu", "float32", fmt, str(mode)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    ok = [line for line in proc.stdout.splitlines() if line.endswith(" ok")]
    assert len(ok) == 2 + (mode == LAUNCH[fmt].mode)  # default and wide shapes, + wide experts
    assert {tuple(line.split()[:3]) for line in ok} == {(fmt, "mode", str(mode))}


@pytest.mark.gpu
def test_quantized_kernels_on_the_gpu():
    sys.path.insert(0, str(CHECK.parent))
    from quant_step_check import check

    assert check("cuda", "float32") == 0
    assert check("cuda", "bfloat16") == 0


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["int8", "fp8", "int4"])
def test_graph_decode_over_quantized_weights_matches_eager(fmt):
    if fmt == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    sys.path.insert(0, str(CHECK.parent))
    from quant_step_check import quantized_pair

    model, _, _ = quantized_pair(fmt, "cuda", torch.bfloat16)
    embeds = model.model.embed_tokens(torch.arange(3, 20, device="cuda").view(1, -1))
    eager = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16)
    assert type(eager.impl).__name__ == "QuantTritonStep"
    eager.graphs = None
    tokens = list(eager.generate_tokens(eager.prefill(embeds), None, 16))
    # both decoders teacher-forced with the eager greedy tokens: the graph's context buckets split the
    # attention differently, so the logits may differ by rounding (a near-tie may flip a greedy token),
    # never by more than the bf16 noise of that split
    runs = []
    for graphs in (False, True):
        dec = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16)
        if not graphs:
            dec.graphs = None
        steps = [dec.prefill(embeds)]
        steps += [dec.step(torch.tensor([t], device="cuda")) for t in tokens[:-1]]
        runs.append(torch.stack(steps))
    assert runs[0].argmax(-1).tolist() == tokens  # eager is deterministic
    diff = (runs[0] - runs[1]).abs().amax(-1) / runs[0].abs().amax(-1)
    assert diff.max().item() < 2e-2, diff.tolist()


def test_pdl_skip_launches_the_named_kernels_plainly():
    """`KernelConfig.pdl_skip`: the kernels it names get neither the launch option nor the in-kernel
    waits (and a skipped projection asks for no L2 prefetch); the others keep dependent launch, and
    `pdl_late` moves its trigger to the programs' ends (PDL 2). (Only the launch settings: building a
    step needs no Triton, so this runs on every machine.)"""
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep
    from kimi_cli.engine.fast.synthetic import build_model

    model = build_model("tiny", device="cpu", dtype=torch.float32, seed=0)
    dec = FastDecoder(model.model, model.lm_head, 64, "cpu", torch.float32, backend="torch")

    def step(**cfg) -> TritonStep:
        return TritonStep(dec.weights, dec.cache, dec.rope, KernelConfig(**cfg))

    on = step(pdl=True, pdl_skip=("experts_up", "gemv2"))
    assert on.gdc_for("experts_down") == {"PDL": 1, "launch_pdl": True}
    assert on.gdc_for("experts_up") == {"PDL": 0, "launch_pdl": False}
    assert on.prefetch_lines(4096) == 0 and on.prefetch_lines(4096, "qgemv2") == 32
    off = step(pdl=False, pdl_skip=("experts_up",))
    assert off.gdc_for("experts_down") == off.gdc_for("experts_up") == {"PDL": 0, "launch_pdl": False}
    late = step(pdl=True, pdl_late=("experts_down", "experts_up"), pdl_skip=("experts_up",))
    assert late.gdc_for("experts_down") == {"PDL": 2, "launch_pdl": True}
    assert late.gdc_for("experts_up") == {"PDL": 0, "launch_pdl": False}  # skipping wins
    assert late.gdc_for("gemv2") == {"PDL": 1, "launch_pdl": True} and late.prefetch_lines(4096) == 32
    assert step(pdl=True, pdl_late=("*",)).gdc_for("head_proj") == {"PDL": 2, "launch_pdl": True}
    assert step(pdl=False, pdl_late=("*",)).gdc_for("gemv2") == {"PDL": 0, "launch_pdl": False}

    class Own(TritonStep):  # a step's own list applies unless the config names one (even an empty one)
        pdl_skip = ("head_proj",)

    own = Own(dec.weights, dec.cache, dec.rope, KernelConfig(pdl=True))
    assert own.gdc_for("head_proj")["PDL"] == 0 and own.gdc_for("gemv2")["PDL"] == 1
    mine = Own(dec.weights, dec.cache, dec.rope, KernelConfig(pdl=True, pdl_skip=()))
    assert mine.gdc_for("head_proj")["PDL"] == 1

    class Late(TritonStep):  # a step's own late list applies unless the config names one
        pdl_late = ("gemv2",)

    assert Late(dec.weights, dec.cache, dec.rope, KernelConfig(pdl=True)).gdc_for("gemv2")["PDL"] == 2
    assert Late(dec.weights, dec.cache, dec.rope, KernelConfig(pdl=True, pdl_late=())).gdc_for("gemv2")["PDL"] == 1


@pytest.mark.parametrize("fmt", ["int8", "fp8", "int4"])
def test_each_format_triggers_its_down_kernel_as_measured(tiny_checkpoint, fmt):
    """The quantized step's own `pdl_late` is its format's (`QuantLaunch.late`): int8 and int4 let the
    next kernel launch at the down kernel's programs' ends (where their down kernel closes the layer),
    fp8 at its start; the config's list, even an empty one, wins. (Launch settings only: no Triton.)"""
    from kimi_cli.engine.fast.quant_step import LAUNCH, QuantTritonStep
    from kimi_cli.engine.fast.step import KernelConfig

    model = _quantized(tiny_checkpoint, fmt).model
    dec = FastDecoder(model.model.language_model, model.lm_head, 64, "cpu", torch.float32)

    def pdl(kernel: str, **cfg) -> int:
        step = QuantTritonStep(dec.weights, dec.cache, dec.rope, KernelConfig(pdl=True, **cfg))
        return step.gdc_for(kernel)["PDL"]

    late = fmt in ("int8", "int4")
    assert LAUNCH[fmt].close == 1 and LAUNCH[fmt].late == (("qexperts_down",) if late else ())
    assert pdl("qexperts_down") == (2 if late else 1)
    assert pdl("qexperts_up") == pdl("qgemv2") == 1
    assert pdl("qexperts_down", pdl_late=()) == 1
    assert pdl("qgemv2", pdl_late=("*",)) == 2


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4"])
def test_dependent_launch_changes_no_logit(fmt):
    """Programmatic dependent launch (and the projections' L2 prefetch) reorders nothing a kernel
    computes: graph decode with it on and off, triggered at the kernels' starts or their programs'
    ends, gives the same logits, bit for bit, teacher-forced."""
    from kimi_cli.engine.fast.graphs import GraphRunner
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep, pdl_default

    if fmt == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    sys.path.insert(0, str(CHECK.parent))
    from quant_step_check import quantized_pair

    if fmt == "bf16":
        from kimi_cli.engine.fast.synthetic import build_model

        model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=2)
    else:
        model, _, _ = quantized_pair(fmt, "cuda", torch.bfloat16)
    embeds = model.model.embed_tokens(torch.arange(3, 20, device="cuda").view(1, -1))

    # the step's kernels that read the most bytes, launched plainly inside an otherwise dependent launch
    big = ("experts_up", "experts_down") if fmt == "bf16" else ("qexperts_up", "qexperts_down", "qgemv2")

    def decoder(pdl: bool, skip: tuple[str, ...] = (), late: tuple[str, ...] = ()) -> FastDecoder:
        dec = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16)
        cfg = KernelConfig(pdl=pdl, pdl_skip=skip, pdl_late=late)
        if fmt == "bf16":
            dec.impl = TritonStep(dec.weights, dec.cache, dec.rope, cfg)
        else:
            dec.impl = make_quant_step(dec.weights, dec.cache, dec.rope, cfg)
        assert dec.impl.gdc == {"PDL": int(pdl), "launch_pdl": pdl}
        dec.graphs = GraphRunner(dec)
        return dec

    dec = decoder(False)
    tokens = list(dec.generate_tokens(dec.prefill(embeds), None, 12))
    runs = []
    for pdl, skip, late in ((False, (), ()), (True, (), ()), (True, big, ()), (True, (), ("*",))):
        dec = decoder(pdl, skip, late)
        steps = [dec.prefill(embeds)] + [dec.step(torch.tensor([t], device="cuda")) for t in tokens[:-1]]
        runs.append(torch.stack(steps))
    assert torch.equal(runs[0], runs[1]), (runs[0] - runs[1]).abs().max().item()
    assert torch.equal(runs[0], runs[2]), (runs[0] - runs[2]).abs().max().item()
    assert torch.equal(runs[0], runs[3]), (runs[0] - runs[3]).abs().max().item()
    assert pdl_default(torch.device("cuda")) is (torch.cuda.get_device_capability()[0] >= 9)
    # the default: on for the quantized step where the GPU has it, off for bf16 (slower with it)
    default = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16).impl
    assert default.gdc["launch_pdl"] is (fmt != "bf16" and pdl_default(torch.device("cuda")))


@pytest.mark.gpu
def test_fp8_pieces_on_the_gpu():
    """Where fp8 parts from the reference on a GPU: the e4m3 widening, one quantized product per kernel
    mode, and the torch path's expert selection (int8 alongside as the control)."""
    import triton
    import triton.language as tl

    from kimi_cli.engine.fast.quant_kernels import FMT_CODES, qgemv2_kernel
    from kimi_cli.engine.fast.weights import QMatrix
    from kimi_cli.model.formats import get_format

    @triton.jit
    def widen(src, dst, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst + offs, tl.load(src + offs, mask=offs < n).to(tl.float32), mask=offs < n)

    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(3, 384, 512, device="cuda", generator=gen).to(torch.bfloat16)
    report = []
    q8 = get_format("fp8").quantize(w)["weight"]
    out = torch.empty(q8.shape, device="cuda", dtype=torch.float32)
    widen[(triton.cdiv(q8.numel(), 1024),)](q8, out, q8.numel(), BLOCK=1024)
    widen_diff = (out - q8.float()).abs().max().item()
    report.append(f"e4m3 widening: max difference {widen_diff:.3g}")
    x = torch.randn(1, 512, device="cuda", generator=gen).to(torch.bfloat16)
    worst = {}
    for fmt in ("int8", "fp8"):
        f = get_format(fmt)
        parts = f.quantize(w[0])
        ref = x.float() @ f.dequantize(parts, torch.float32).T
        scale = [v for k, v in parts.items() if k != "weight"][0]
        stride = 1 if scale.dim() == 1 else scale.shape[-1]
        for mode in (0, 1):
            got = torch.empty(1, 384, device="cuda", dtype=torch.bfloat16)
            qgemv2_kernel[(384 // 32,)](x, parts["weight"], scale, parts["weight"], scale, got, got, 384, 1,
                                         stride, stride, K=512, FMT=FMT_CODES[fmt], BLOCK_N=32, BLOCK_K=128, MODE=mode)
            worst[fmt, mode] = ((got.float() - ref).abs().max() / ref.abs().max()).item()
            report.append(f"{fmt} gemv mode {mode}: relative difference {worst[fmt, mode]:.3g}")
        stack = QMatrix(fmt, f.quantize(w), tuple(w.shape))
        idx = torch.tensor([2, 0], device="cuda")
        sel = stack.select(idx).dequantize(torch.float32)
        whole = stack.dequantize(torch.float32)[idx]
        worst[fmt, "select"] = (sel - whole).abs().max().item()
        report.append(f"{fmt} select-then-dequantize vs dequantize-then-index: {worst[fmt, 'select']:.3g}")
    print("\n".join(report))
    assert widen_diff == 0
    assert all(v < 2e-2 for k, v in worst.items() if k[1] != "select"), report
    assert worst["fp8", "select"] == 0 and worst["int8", "select"] == 0, report
