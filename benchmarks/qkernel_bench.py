"""Launch shapes of the quantized decode kernels, measured on a synthetic full-size language model (CUDA).

    PYTHONPATH=. python benchmarks/qkernel_bench.py --formats int8,fp8,int4 --json qkernels.json
    PYTHONPATH=. python benchmarks/qkernel_bench.py --preset tiny --formats int8 --quick   # smoke run

For bf16 and then each format: random weights of Kimi-VL's language model built on the GPU (no
checkpoint on disk; the values do not change the timing) and converted in place; a random prefill of
`--context` tokens; then, for each launch shape (`quant_step.QuantLaunch`: mode, block_n, block_k, warps,
stages), the largest logit difference of one step against the torch step (relative to the largest
logit; bf16's own Triton step gives the noise floor a shape is held to) and the back-to-back
CUDA-graph replay rate, tokens/s. bf16's rate is the reference the issue's
targets compare with. The shapes tried are a grid around `quant_step.LAUNCH`, plus the stage counts of
each format's best; the best per format is printed as a `LAUNCH` line to paste.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def shapes(fmt: str, quick: bool) -> list[Any]:
    """The launch shapes to try for `fmt`."""
    from kimi_cli.engine.fast.quant_step import LAUNCH, MODES, QuantLaunch

    if quick:  # the default, and the other mode where the format has one
        return [LAUNCH[fmt], *[replace(LAUNCH[fmt], mode=m) for m in MODES[fmt] if m != LAUNCH[fmt].mode]]
    modes = MODES[fmt]

    def ks(mode: int) -> tuple[int, ...]:  # the word mode (2) takes several int4 scale groups a chunk
        return (128, 256, 512) if mode == 2 else (128, 256) if fmt == "int8" else (128,)

    grid = [QuantLaunch(mode=m, block_n=n, block_k=k) for m in modes for n in (32, 64) for k in ks(m)]
    return [LAUNCH[fmt], *[g for g in grid if g != LAUNCH[fmt]]]


def difference(dec: Any, impl: Any) -> float:
    """Largest |fast - torch| logit difference of one step at the cache's end, over the largest logit."""
    import torch

    from kimi_cli.engine.fast.step import TorchStep

    token = torch.tensor([7], device=dec.pos.device)
    pos = torch.tensor([dec.length], device=dec.pos.device)
    with torch.inference_mode():
        ref = TorchStep(dec.weights, dec.cache, dec.rope).forward(token, pos, dec.length + 1)
        out = impl.forward(token, pos, dec.length + 1)
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6))


def measure(dec: Any, impl: Any, steps: int) -> dict[str, Any]:
    """The shape's logit difference and replay tokens/s (or why it failed)."""
    from kimi_cli.bench.decode import replay_rate
    from kimi_cli.engine.fast.graphs import GraphRunner

    try:
        diff = difference(dec, impl)
        if dec.pos.device.type != "cuda":  # a smoke run (Triton's interpreter): no graphs, no rate
            return {"max_rel_diff": diff, "tok_s": 0.0}
        dec.impl = impl
        dec.graphs = GraphRunner(dec)
        return {"max_rel_diff": diff, "tok_s": replay_rate(dec, steps)}
    except Exception as err:  # noqa: BLE001 - a launch shape can exceed the chip's resources
        return {"error": f"{type(err).__name__}: {str(err)[:200]}"}


def accepted(row: dict[str, Any], args: argparse.Namespace) -> bool:
    """A measured shape whose logit difference is within `--tolerance`, or within `--noise` times bf16's
    own difference on the same weights (random full-size weights amplify any rounding through 27 layers)."""
    limit = max(args.tolerance, args.noise * getattr(args, "floor", 0.0))
    return "tok_s" in row and row["max_rel_diff"] == row["max_rel_diff"] and row["max_rel_diff"] <= limit


def run_format(fmt: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_modules

    dev, dtype = args.device, (torch.bfloat16 if args.device == "cuda" else torch.float32)
    model = build_model(args.preset, device=dev, dtype=dtype, seed=0)
    if fmt != "bf16":
        quantize_modules(model.model, get_format(fmt))
    dec = FastDecoder(model.model, model.lm_head, args.context + 64, dev, dtype, backend="torch")
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, args.context), device=dev, generator=gen)
    with torch.inference_mode():
        dec.prefill(model.model.embed_tokens(ids))
    rows: list[dict[str, Any]] = []
    if fmt == "bf16":  # the noise floor: bf16's own Triton step against the torch step, same weights
        from kimi_cli.engine.fast.step import TritonStep

        rows.append({"format": fmt, "launch": None, **measure(dec, TritonStep(dec.weights, dec.cache, dec.rope), args.steps)})
        print(json.dumps(rows[-1]), flush=True)
        args.floor = rows[-1].get("max_rel_diff", 0.0)
    else:
        tried = shapes(fmt, args.quick)
        for i, la in enumerate(tried):
            rows.append({"format": fmt, "launch": asdict(la),
                         **measure(dec, make_quant_step(dec.weights, dec.cache, dec.rope, launch={fmt: la}), args.steps)})
            print(json.dumps(rows[-1]), flush=True)
            if i == len(tried) - 1 and not args.quick:  # then the stage counts of the best so far
                best = max((r for r in rows if accepted(r, args)), key=lambda r: r["tok_s"], default=None)
                if best is not None:
                    top = type(la)(**best["launch"])
                    for la2 in (replace(top, warps=8), replace(top, warps=2), replace(top, stages=2),
                                replace(top, stages=4)):
                        rows.append({"format": fmt, "launch": asdict(la2), **measure(
                            dec, make_quant_step(dec.weights, dec.cache, dec.rope, launch={fmt: la2}), args.steps)})
                        print(json.dumps(rows[-1]), flush=True)
    del dec, model
    if dev == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int8,fp8,int4")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (no rates)")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tolerance", type=float, default=5e-2, help="largest relative logit difference accepted")
    ap.add_argument("--noise", type=float, default=2.0, help="or this many times bf16's own difference")
    ap.add_argument("--quick", action="store_true", help="two shapes per format")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write-best", type=Path, help="write the best shape per format as JSON")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for fmt in ["bf16", *args.formats.split(",")]:
        rows += run_format(fmt, args)
        print("", flush=True)
        report(rows, args)  # after each format: a run cut short keeps what it measured
    return 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the best shape per format measured so far; write --json and --write-best."""
    bf16, chosen = rows[0]["tok_s"] or 1.0, {}
    for fmt in sorted({r["format"] for r in rows} - {"bf16"}):
        ok = [r for r in rows if r["format"] == fmt and accepted(r, args)]
        if ok:
            best = max(ok, key=lambda r: r["tok_s"])
            chosen[fmt] = best["launch"]
            print(f"best {fmt}: {best['tok_s']:.1f} tok/s ({best['tok_s'] / bf16:.2f}x bf16 {bf16:.1f}), "
                  f"diff {best['max_rel_diff']:.1e}: QuantLaunch(**{best['launch']})")
        else:
            print(f"best {fmt}: no shape within tolerance")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write_best:
        args.write_best.write_text(json.dumps(chosen))


if __name__ == "__main__":
    sys.exit(main())
