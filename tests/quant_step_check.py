"""Run by tests/test_fast_quant.py (in a subprocess, so TRITON_INTERPRET applies from the start), and on a GPU.

Compares the quantized Triton decode step with the torch reference step on the tiny checkpoint, for
every format; prints one line per format with the largest logit difference and exits 1 on a mismatch.
"""

from __future__ import annotations

import sys


def check(ckpt: str, device: str, dtype_name: str, steps: int = 6) -> int:
    import torch

    from kimi_cli.engine.fast.cache import LatentCache
    from kimi_cli.engine.fast.quant_step import make_quant_step, quant_supported
    from kimi_cli.engine.fast.reference import rope_table
    from kimi_cli.engine.fast.step import TorchStep
    from kimi_cli.engine.fast.weights import extract
    from kimi_cli.model.checkpoint import load_model

    failures = 0
    for fmt in ("int8", "fp8", "int4"):
        loaded = load_model(ckpt, device=device, dtype=dtype_name, quantize=fmt)
        lm = loaded.model.model.language_model
        w = extract(lm, loaded.model.lm_head)
        assert quant_supported(w), fmt
        dt = loaded.dtype
        rope = rope_table(w.inv_freq.to(device), w.rope_scale, 64, dt)
        caches = [LatentCache.allocate(len(w.layers), 64, w.kv_lora, w.rope_dim, torch.device(device), dt)
                  for _ in range(2)]
        for c in caches:
            c.c.zero_()
            c.k.zero_()
        ref, fast = TorchStep(w, caches[0], rope), make_quant_step(w, caches[1], rope)
        worst = 0.0
        with torch.inference_mode():
            for i in range(steps):
                token = torch.tensor([7 + 13 * i], device=device)
                pos = torch.tensor([i], device=device)
                a, b = ref.forward(token, pos, i + 1), fast.forward(token, pos, i + 1)
                worst = max(worst, (a - b).abs().max().item() / max(a.abs().max().item(), 1e-6))
        ok = worst < (2e-3 if dt == torch.float32 else 5e-2)
        failures += not ok
        print(f"{fmt}: max relative logit difference {worst:.2e} {'ok' if ok else 'MISMATCH'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(check(sys.argv[1], sys.argv[2], sys.argv[3]))
