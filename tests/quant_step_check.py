"""Run by tests/test_fast_quant.py (in a subprocess, so TRITON_INTERPRET applies from the start), and on a GPU.

Compares the quantized Triton decode step with the torch reference step on the fast path's tiny random
model (Triton-sized shapes), for every format; prints one line per format and returns 1 on a mismatch.
"""

from __future__ import annotations

import sys
from dataclasses import replace


def quantized_pair(fmt: str, device: str, dtype, seed: int = 2, **overrides):
    """(model, torch-step decoder, triton-step decoder) over the tiny model (`overrides` to its config)
    converted to `fmt`."""
    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_modules

    model = build_model("tiny", device=device, dtype=dtype, seed=seed, **overrides)
    quantize_modules(model.model, get_format(fmt))
    ref = FastDecoder(model.model, model.lm_head, 96, device, dtype, backend="torch")
    fast = FastDecoder(model.model, model.lm_head, 96, device, dtype, backend="triton")
    if type(fast.impl).__name__ != "QuantTritonStep":  # a format the kernels do not run by default
        from kimi_cli.engine.fast.quant_step import make_quant_step

        fast.impl = make_quant_step(fast.weights, fast.cache, fast.rope)
    ref.graphs = fast.graphs = None
    return model, ref, fast


def check(device: str, dtype_name: str, steps: int = 6, formats: tuple[str, ...] | None = None,
          only_mode: int | None = None) -> int:
    """Every format under each of its kernel modes, in its default launch shape and in another one (16
    rows and 256 columns a chunk; the products' own row blocks and down chunk), against the torch step;
    then each format's default with experts 128 wide, where the shared experts' down product takes a
    slot per half (fp8's and int4's halves start on a scale group only then).

    float32 (the kernels accumulate in float32 either way) must match at every step. In bfloat16 a
    router near-tie on this random model flips an expert now and then, and that step's logits differ
    by tenths (seen on an H200 in every format, seeds 2 and 5); the median step is what a kernel bug
    would move, so bfloat16 is judged on it."""
    import torch

    from kimi_cli.engine.fast.quant_step import LAUNCH, MODES, make_quant_step

    dtype = getattr(torch, dtype_name)
    failures = 0
    # two scale groups a chunk (the dense down product's 256 columns); gemv 64 rows, down 32 rows x 128
    wide = {"block_n": 16, "block_k": 256, "gemv_n": 64, "down_n": 32, "down_k": 128}
    formats = formats or tuple(MODES)
    # `only_mode`: that mode alone (the wide experts with it when it is the format's default)
    modes = {f: [m for m in MODES[f] if only_mode in (None, m)] for f in formats}
    cases = [(f, m, shape, {}) for f in formats for m in modes[f] for shape in ({}, wide)]
    cases += [(f, LAUNCH[f].mode, {}, {"moe_intermediate_size": 128}) for f in formats if LAUNCH[f].mode in modes[f]]
    for fmt, mode, shape, config in cases:
        model, ref, fast = quantized_pair(fmt, device, dtype, **config)
        launch = {fmt: replace(LAUNCH[fmt], mode=mode, **shape)}
        fast.impl = make_quant_step(fast.weights, fast.cache, fast.rope, launch=launch)
        ids = torch.arange(3, 14, device=device).view(1, -1)
        errors = []
        with torch.inference_mode():
            embeds = model.model.embed_tokens(ids)
            a, b = ref.prefill(embeds), fast.prefill(embeds)
            for _ in range(steps):
                token = a.argmax().view(1)
                a, b = ref.step(token), fast.step(token)
                errors.append((a - b).abs().max().item() / max(a.abs().max().item(), 1e-6))
        worst, median = max(errors), sorted(errors)[len(errors) // 2]
        ok = worst < 2e-3 if dtype == torch.float32 else median < 5e-2
        failures += not ok
        print(
            f"{fmt} mode {mode} {shape or 'default'} {config or ''}: relative logit difference, "
            f"max {worst:.2e} median {median:.2e} {'ok' if ok else 'MISMATCH'}"
        )
    return 1 if failures else 0


if __name__ == "__main__":  # DEVICE DTYPE [FORMAT,... [MODE]]
    chosen = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    sys.exit(check(sys.argv[1], sys.argv[2], formats=chosen, only_mode=int(sys.argv[4]) if len(sys.argv) > 4 else None))
