"""The vision tower's attention alone: torch's SDPA backends against `engine.fast.vision_attention`.

    python benchmarks/vision_attn_probe.py [--size 1792] [--heads 16] [--head-dim 72] [--json FILE]

One image of `size` x `size` is (size / 14)^2 positions in one sequence (MoonViT's patch of 14). Each
row: median ms of one layer's attention (q, k, v in the projections' [positions, heads, dim] layout,
as the tower has them), its TFLOP/s (4 N^2 heads dim), and its error against float32 attention on
two heads (max abs and relative). SDPA runs on the transposed views, as transformers calls it; the
padded rows pad the head with zeros first (the pad's time counted). The Triton rows sweep block
shapes; the last check runs three sequences of unequal length packed (the kernel's varlen form).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1792)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=72)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kimi_cli.bench.explore import timed_ms
    from kimi_cli.engine.fast import vision_attention as va

    torch.manual_seed(0)
    n, h, d = (args.size // 14) ** 2, args.heads, args.head_dim
    scale = d ** -0.5
    q, k, v = (torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, n], dtype=torch.int32, device="cuda")
    flops = 4 * n * n * h * d
    check_heads = [0, h - 1]
    ref = {i: va.reference(q[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], cu.cpu(), scale).float() for i in check_heads}

    def error(out):
        worst, rel = 0.0, 0.0
        for i in check_heads:
            o = out[:, i:i + 1].float()
            worst = max(worst, float((o - ref[i]).abs().max()))
            rel = max(rel, float((o - ref[i]).norm() / ref[i].norm()))
        return worst, rel

    rows = []

    def row(name, fn, out_fn):
        try:
            ms = timed_ms(fn, args.reps)
            worst, rel = error(out_fn())
            rows.append({"name": name, "ms": round(ms, 3), "tflops": round(flops / ms / 1e9, 1),
                         "max_abs": worst, "rel": rel})
        except Exception as exc:  # noqa: BLE001 - a backend refusing these inputs is a row too
            rows.append({"name": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"})
        print(json.dumps(rows[-1]), flush=True)

    def sdpa(backend, pad_to=None):
        def run():
            qq, kk, vv = (t.transpose(0, 1)[None] for t in (q, k, v))
            if pad_to:
                qq, kk, vv = (F.pad(t, (0, pad_to - d)) for t in (qq, kk, vv))
            ctx = sdpa_kernel([backend]) if backend is not None else torch.no_grad()
            with ctx:
                o = F.scaled_dot_product_attention(qq, kk, vv, scale=scale)
            return o[0, :, :, :d].transpose(0, 1)
        return run

    with torch.inference_mode():
        row("sdpa default (transformers' call)", sdpa(None), sdpa(None))
        for b in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            row(f"sdpa {b.lower()}", sdpa(getattr(SDPBackend, b)), sdpa(getattr(SDPBackend, b)))
        for pad in (80, 96, 128):
            if pad > d:
                for b in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
                    f = sdpa(getattr(SDPBackend, b), pad)
                    row(f"sdpa {b.lower()} padded to {pad}", f, f)
        configs = [(128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3),
                   (128, 32, 4, 4), (256, 64, 8, 3), (128, 64, 8, 4), (128, 64, 4, 4), (64, 128, 4, 3)]
        for cfg in configs:
            def tri(cfg=cfg):
                return va.attention(q, k, v, cu, n, scale, config=cfg)
            row(f"triton {cfg} {'(default)' if cfg == (va.BLOCK_M, va.BLOCK_N, va.WARPS, va.STAGES) else ''}", tri, tri)
        # packed sequences of unequal length against float32, one sequence at a time
        lens = [n // 2 + 37, n // 4 - 5, n - (n // 2 + 37) - (n // 4 - 5)]
        cu3 = torch.tensor([0, lens[0], lens[0] + lens[1], n], dtype=torch.int32, device="cuda")
        out = va.attention(q, k, v, cu3, max(lens), scale)
        ref3 = va.reference(q[:, :1], k[:, :1], v[:, :1], cu3.cpu(), scale).float()
        o = out[:, :1].float()
        varlen = {"lens": lens, "max_abs": float((o - ref3).abs().max()), "rel": float((o - ref3).norm() / ref3.norm())}
        print("varlen", json.dumps(varlen), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": n, "heads": h, "head_dim": d, "rows": rows, "varlen": varlen}, indent=1))


if __name__ == "__main__":
    main()
