"""The experts' down kernel closes each MoE layer itself (`KernelConfig.close` 1 or 2): its last programs
sum the slots' parts, add the residual and apply the next norm, so `reduce_norm_kernel` is no longer
launched after it. Level 1 (one program sums everything) must give the very bits of the two-kernel path
(level 0); level 2 (row block by row block, then the norm from the blocks' sums of squares) sums the
squares in another order, so it agrees to rounding. The per-layer counts must be back at 0 after every
step (the next replay counts from there).

The launches are checked everywhere (recorded, nothing runs); the arithmetic in Triton's interpreter on
the CPU (where Triton is installed) and on a GPU through CUDA graphs (gpu marker), for every format.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

CHECK = Path(__file__).with_name("quant_step_check.py")


@pytest.mark.parametrize("fmt", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("close", [0, 1, 2])
def test_down_kernel_launch_replaces_reduce_norm(fmt, close):
    from kimi_cli.engine.fast import prewarm
    from kimi_cli.engine.fast.cache import LatentCache
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.engine.fast.weights import MoEWeights, extract
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_modules

    model = build_model("tiny", device="cpu", dtype=torch.bfloat16, seed=0)
    if fmt != "bf16":
        quantize_modules(model.model, get_format(fmt))
    w = extract(model.model, model.lm_head)
    cache = LatentCache.allocate(len(w.layers), 64, w.kv_lora, w.rope_dim, "cpu", torch.bfloat16)
    rope = torch.empty(2, 64, w.rope_dim // 2, dtype=torch.bfloat16)
    cfg = KernelConfig(close=close)
    step = TritonStep(w, cache, rope, cfg) if fmt == "bf16" else make_quant_step(w, cache, rope, cfg)
    sink: list = []
    step.tk = prewarm.Recorder("triton_kernels", sink)
    step.qk = prewarm.Recorder("quant_kernels", sink)
    with torch.inference_mode():
        step.forward(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), 64)
    moe = sum(isinstance(lw.mlp, MoEWeights) for lw in w.layers)
    assert moe > 0
    names = [la.kernel for la in sink]
    down = [la for la in sink if la.kernel.endswith("experts_down_kernel")]
    assert len(down) == moe
    assert all(dict(la.kwargs)["CLOSE"] == close for la in down)
    assert names.count("reduce_norm_kernel") == (0 if close else moe)
    # each layer's down kernel gets a counter of its own, all aligned alike (one compiled variant)
    assert len({la.variant() for la in down}) == 1
    assert step.counts.shape[0] == len(w.layers) and not step.counts.any()
    # the config's level wins over the step's default; level 2 needs a count per row block (at most 256)
    assert step.close_level(0, 256) == close and step.close_level(0, 512) == (1 if close == 2 else close)


#: Run in a fresh interpreter with TRITON_INTERPRET=1 (it must be set before Triton is imported).
INTERPRETED = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    from quant_step_check import quantized_pair
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.engine.fast import FastDecoder

    for fmt in ("bf16", "int8"):
        if fmt == "bf16":
            model = build_model("tiny", device="cpu", dtype=torch.float32, seed=2)
        else:
            model = quantized_pair(fmt, "cpu", torch.float32)[0]
        embeds = model.model.embed_tokens(torch.arange(3, 14).view(1, -1))
        runs = []
        for close in (0, 1, 2):
            dec = FastDecoder(model.model, model.lm_head, 96, "cpu", torch.float32, backend="torch")
            dec.graphs = None
            cfg = KernelConfig(close=close)
            w, cache, rope = dec.weights, dec.cache, dec.rope
            dec.impl = TritonStep(w, cache, rope, cfg) if fmt == "bf16" else make_quant_step(w, cache, rope, cfg)
            logits = [dec.prefill(embeds)]
            for t in (5, 9, 17):  # teacher-forced: the same tokens for both
                logits.append(dec.step(torch.tensor([t])))
                assert not dec.impl.counts.any(), dec.impl.counts
            runs.append(torch.stack(logits))
        assert torch.equal(runs[0], runs[1]), (runs[0] - runs[1]).abs().max()
        torch.testing.assert_close(runs[2], runs[0], rtol=1e-5, atol=1e-5)
        assert runs[2].argmax(-1).tolist() == runs[0].argmax(-1).tolist()
        print(fmt, "close ok")
""")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_closing_in_the_down_kernel_changes_no_bit_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED, str(CHECK.parent)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count("close ok") == 2


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["bf16", "int8", "fp8", "int4"])
def test_closing_in_the_down_kernel_changes_no_bit_on_the_gpu(fmt):
    """Graph replays, dependent launch as each step has it, teacher-forced: level 1 gives the same logits
    to the bit (the last program sums the parts in slot order, as `reduce_norm_kernel` does), level 2
    the same to bf16 rounding; counts back at 0 after each."""
    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.graphs import GraphRunner
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep
    from kimi_cli.engine.fast.synthetic import build_model

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if fmt == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    sys.path.insert(0, str(CHECK.parent))
    from quant_step_check import quantized_pair

    if fmt == "bf16":
        model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=2)
    else:
        model = quantized_pair(fmt, "cuda", torch.bfloat16)[0]
    embeds = model.model.embed_tokens(torch.arange(3, 20, device="cuda").view(1, -1))
    tokens = [int(t) for t in torch.randint(3, model.config.vocab_size, (24,), generator=torch.Generator().manual_seed(3))]
    runs = []
    for close in (0, 1, 2):
        dec = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16)
        cfg = KernelConfig(close=close)
        w, cache, rope = dec.weights, dec.cache, dec.rope
        dec.impl = TritonStep(w, cache, rope, cfg) if fmt == "bf16" else make_quant_step(w, cache, rope, cfg)
        dec.graphs = GraphRunner(dec)
        steps = [dec.prefill(embeds)]
        steps += [dec.step(torch.tensor([t], device="cuda")) for t in tokens]
        torch.cuda.synchronize()
        assert not dec.impl.counts.any()
        runs.append(torch.stack(steps))
    assert torch.equal(runs[0], runs[1]), (runs[0] - runs[1]).abs().max()
    diff = (runs[2] - runs[0]).abs().amax(-1) / runs[0].abs().amax(-1)
    assert diff.max().item() < 2e-2, diff.tolist()
