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


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_quantized_kernels_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(CHECK), "cpu", "float32"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count(" ok") == 3


@pytest.mark.gpu
def test_quantized_kernels_on_the_gpu():
    sys.path.insert(0, str(CHECK.parent))
    from quant_step_check import check

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
    runs = []
    for graphs in (True, False):
        dec = FastDecoder(model.model, model.lm_head, 128, "cuda", torch.bfloat16)
        expected = "QuantTritonStep" if fmt != "fp8" else "TorchStep"  # fp8: see quant_step.TRITON_FORMATS
        assert type(dec.impl).__name__ == expected
        if not graphs:
            dec.graphs = None
        logits = dec.prefill(embeds)
        runs.append(list(dec.generate_tokens(logits, None, 16)))
    assert runs[0] == runs[1]
