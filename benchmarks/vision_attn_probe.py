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
import subprocess
import sys
from pathlib import Path


def one_variant(spec: dict) -> None:
    """Time one Triton variant, its error against float32 on two heads and, packed, on three sequences."""
    import torch

    from kimi_cli.bench.explore import timed_ms
    from kimi_cli.engine.fast import vision_attention as va

    torch.manual_seed(0)
    n, h, d = (spec["size"] // 14) ** 2, spec["heads"], spec["head_dim"]
    cfg, split = tuple(spec["cfg"]), tuple(spec["split"]) if spec["split"] else None
    q, k, v = (torch.randn(n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, n], dtype=torch.int32, device="cuda")
    lens = [n // 2 + 37, n // 4 - 5, n - (n // 2 + 37) - (n // 4 - 5)]
    cu3 = torch.tensor([0, lens[0], lens[0] + lens[1], n], dtype=torch.int32, device="cuda")
    row = {"name": f"triton {cfg} split {split or va.split_head(d)} d={d}"}
    with torch.inference_mode():
        out = va.attention(q, k, v, cu, n, d ** -0.5, config=cfg, split=split).float()
        torch.cuda.synchronize()
        worst, rel = 0.0, 0.0
        for i in (0, h - 1):
            ref = va.reference(q[:, i:i + 1], k[:, i:i + 1], v[:, i:i + 1], cu.cpu(), d ** -0.5).float()
            worst = max(worst, float((out[:, i:i + 1] - ref).abs().max()))
            rel = max(rel, float((out[:, i:i + 1] - ref).norm() / ref.norm()))
        packed = va.attention(q, k, v, cu3, max(lens), d ** -0.5, config=cfg, split=split)[:, :1].float()
        ref3 = va.reference(q[:, :1], k[:, :1], v[:, :1], cu3.cpu(), d ** -0.5).float()
        ms = timed_ms(lambda: va.attention(q, k, v, cu, n, d ** -0.5, config=cfg, split=split), spec["reps"])
    row.update(ms=round(ms, 3), tflops=round(4 * n * n * h * d / ms / 1e9, 1), max_abs=worst, rel=rel,
               packed_rel=float((packed - ref3).norm() / ref3.norm()))
    print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1792)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=72)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", type=Path)
    p.add_argument("--variant", help=argparse.SUPPRESS)  # one Triton variant (JSON), in a child process
    args = p.parse_args()
    if args.variant:
        return one_variant(json.loads(args.variant))
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
        for b in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
            row(f"sdpa {b.lower()}", sdpa(getattr(SDPBackend, b)), sdpa(getattr(SDPBackend, b)))
        for pad in (80, 128):
            if pad > d:
                f = sdpa(SDPBackend.CUDNN_ATTENTION, pad)
                row(f"sdpa cudnn_attention padded to {pad}", f, f)
    # each Triton variant in a process of its own: a fault leaves the CUDA context unusable
    variants = [((128, 64, 8, 3), None, d), ((128, 64, 8, 1), None, d), ((128, 64, 4, 2), None, d),
                ((64, 64, 4, 3), None, d), ((128, 128, 8, 3), None, d), ((128, 64, 8, 3), (128, 0), d),
                ((128, 128, 8, 3), (128, 0), d), ((128, 64, 8, 3), None, 64), ((128, 64, 8, 3), None, 16)]
    for cfg, split, hd in variants:
        spec = json.dumps({"cfg": cfg, "split": split, "head_dim": hd, "size": args.size, "heads": h, "reps": args.reps})
        proc = subprocess.run([sys.executable, __file__, "--variant", spec], capture_output=True, text=True, timeout=120)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if lines:
            rows.append(json.loads(lines[-1]))
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
            rows.append({"name": f"triton {cfg} split {split} d={hd}", "error": f"rc {proc.returncode}: {tail}"})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": n, "heads": h, "head_dim": d, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
