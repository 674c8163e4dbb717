"""Launch shapes of the quantized decode kernels, measured on a synthetic full-size language model (CUDA).

    PYTHONPATH=. python benchmarks/qkernel_bench.py --formats int8,fp8,int4 --json qkernels.json
    PYTHONPATH=. python benchmarks/qkernel_bench.py --preset tiny --formats int8 --quick   # smoke run

For bf16 and then each format: random weights of Kimi-VL's language model built on the GPU (no
checkpoint on disk; the values do not change the timing) and converted in place; a random prefill of
`--context` tokens; then, for each launch shape (bf16: `step.KernelConfig`; the formats:
`quant_step.QuantLaunch`: mode, block_n, block_k, warps, stages), in order of promise until the format's
`--budget` seconds are spent:
- the per-layer error: each product the shape launches (the attention projections, the dense MLP, the
  routed + shared experts) on random inputs against the reference path on the same (quantized) weights,
  relative Frobenius error, the median over a few layers, the worst product kept. bf16's default Triton
  step gives the noise floor; a shape is accepted within `--tolerance` or `--noise` times that floor.
  (The whole-model logit difference is also printed, for information only: through 27 layers of random
  weights any rounding is amplified chaotically, up to overflow.)
- the back-to-back CUDA-graph replay rate, tokens/s. bf16's default rate is what the targets compare with.
The best per format is printed as a line to paste into `LAUNCH` / `KernelConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def shapes(fmt: str, quick: bool, only: dict[str, list[Any]] | None = None,
           modes: tuple[int, ...] | None = None) -> list[Any]:
    """The launch shapes to try for `fmt`, most promising first (the default first of all); `only`
    replaces `PRIORITY` (format -> [mode, block_n, block_k, warps, stages] lists, or objects of
    `QuantLaunch` fields that change the format's default launch); with `quick`, `modes`
    limits the other modes tried to these (the default launch in each, its other fields kept)."""
    from kimi_cli.engine.fast.quant_step import LAUNCH, MODES, QuantLaunch
    from kimi_cli.engine.fast.step import KernelConfig

    if fmt == "bf16":
        base = KernelConfig()
        tried = [base] if quick else [base, *(replace(base, **kw) for kw in BF16_VARIANTS)]
        return list(dict.fromkeys(tried))
    if quick:  # the default, and the other modes the format has
        others = [m for m in MODES[fmt] if m != LAUNCH[fmt].mode and (modes is None or m in modes)]
        return [LAUNCH[fmt], *[replace(LAUNCH[fmt], mode=m) for m in others]]
    listed = (PRIORITY if only is None else only).get(fmt, [])
    tried = [LAUNCH[fmt], *(replace(LAUNCH[fmt], **t) if isinstance(t, dict) else QuantLaunch(*t) for t in listed)]
    return list(dict.fromkeys(la for la in tried if la.mode in MODES[fmt]))


#: bf16 variants of `KernelConfig` (elementwise products; a program's bytes in flight: wider K chunks,
#: fewer rows, more warps).
BF16_VARIANTS: list[dict[str, Any]] = [
    {"gemv_fma": False, "expert_fma": False, "gemv_block_n": 32, "gemv_block_k": 256},  # tensor cores (until 12-04)
    {"gemv_fma": False, "gemv_block_n": 32}, {"expert_fma": False}, {"gemv_block_k": 256},  # until 12-07
    {"up_block_n": 32}, {"up_block_n": 16, "up_block_k": 512},  # the FMA up kernel without its spill
    {"down_block_k": 256}, {"down_block_n": 16, "down_block_k": 256}, {"down_block_n": 64},
    {"gemv_block_n": 32}, {"gemv_block_k": 1024}, {"gemv_block_n": 32, "gemv_block_k": 256},
    {"expert_warps": 8}, {"up_block_n": 64, "up_block_k": 128},
]  # up_block_k 512 at 64 rows spills (59 tok/s on an H100, 2026-12-07): not listed
#: (mode, block_n, block_k, warps, stages) per format, in the order tried. At 32 rows a program, a
#: 128-column int8 chunk is 4 KB in flight against bf16's 16 KB (256 columns): wider chunks first.
PRIORITY: dict[str, list[tuple[int, int, int, int, int]]] = {
    "int8": [(2, 32, 512, 4, 3), (2, 16, 512, 4, 3), (2, 32, 256, 4, 3), (2, 32, 512, 8, 3),
             (2, 64, 256, 4, 3), (2, 32, 1024, 8, 3), (1, 16, 512, 4, 3), (1, 32, 512, 8, 3),
             (0, 32, 512, 4, 3), (0, 32, 256, 4, 3), (2, 16, 1024, 4, 3), (2, 32, 512, 4, 2),
             (2, 32, 512, 4, 4), (1, 32, 256, 4, 3)],
    "fp8": [(1, 16, 512, 4, 3), (1, 32, 256, 4, 3), (1, 32, 512, 8, 3), (1, 16, 256, 4, 3),
            (1, 16, 512, 8, 3), (1, 64, 256, 8, 3), (1, 32, 256, 8, 3), (1, 16, 1024, 8, 3),
            (1, 32, 128, 8, 3), (1, 16, 512, 4, 2), (1, 16, 512, 4, 4)],
    "int4": [(1, 32, 512, 4, 3), (1, 16, 512, 4, 3), (2, 32, 1024, 4, 3), (2, 16, 1024, 4, 3),
             (1, 32, 256, 4, 3), (1, 32, 1024, 8, 3), (1, 32, 512, 8, 3), (2, 32, 512, 4, 3),
             (2, 32, 1024, 8, 3), (1, 64, 512, 8, 3), (1, 16, 1024, 4, 3), (1, 32, 512, 4, 2),
             (1, 32, 512, 4, 4)],
}


def _rel(out: Any, ref: Any) -> float:
    """Relative Frobenius error of `out` against `ref` (inf where `out` is not finite)."""
    import torch

    out, ref = out.float(), ref.float()
    if not bool(torch.isfinite(out).all()):
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def layer_error(dec: Any, impl: Any, layers: int = 5) -> dict[str, float]:
    """Median over `layers` layers of each product's relative error against the reference path, on
    random inputs (same seed for every shape): {"attn": q_proj + kv_a and o_proj, "mlp": the MoE layer
    or dense MLP}."""
    import statistics

    import torch

    from kimi_cli.engine.fast import reference as ref
    from kimi_cli.engine.fast.weights import MoEWeights

    w, dev = dec.weights, dec.pos.device
    n = len(w.layers)
    picked = sorted({0, *(round(i * (n - 1) / max(layers - 1, 1)) for i in range(layers))})
    gen = torch.Generator(device=dev).manual_seed(1)
    hid = w.embed.shape[-1]
    errs: dict[str, list[float]] = {"attn": [], "mlp": []}

    def rand(*shape: int, scale: float = 1.0) -> Any:
        return (torch.randn(*shape, device=dev, generator=gen) * scale).to(w.embed.dtype)

    with torch.inference_mode():
        for i in picked:
            lw = w.layers[i]
            aw = lw.attn
            h = rand(1, hid)
            q, ckv = impl._gemv2(h, aw.q_proj, aw.kv_a)
            o = rand(1, aw.o_proj.shape[-1])
            out = impl._gemv2(o, aw.o_proj, None)[0]
            errs["attn"].append(max(_rel(q, ref.linear(h, aw.q_proj)), _rel(ckv, ref.linear(h, aw.kv_a)),
                                    _rel(out, ref.linear(o, aw.o_proj))))
            if isinstance(lw.mlp, MoEWeights):  # residual 0 and a tiny attention output: x3 - x2 is the MoE's
                x, a = torch.zeros_like(h), rand(1, hid, scale=1e-4)
                x3, _ = impl._moe(x, a, lw, (w.final_norm, w.final_eps))
                want = ref.moe(ref.rms_norm(a, lw.post_norm, lw.eps), lw.mlp)
                errs["mlp"].append(_rel(x3.float() - a.float(), want))
            else:
                errs["mlp"].append(_rel(impl._dense(h, lw.mlp), ref.dense_mlp(h, lw.mlp)))
    return {k: statistics.median(v) for k, v in errs.items() if v}


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
    """The shape's per-layer error, whole-model logit difference and replay tokens/s (or why it failed)."""
    from kimi_cli.bench.decode import replay_rate
    from kimi_cli.engine.fast.graphs import GraphRunner

    try:
        errs = layer_error(dec, impl)
        row: dict[str, Any] = {"layer_err": max(errs.values()), **{f"err_{k}": v for k, v in errs.items()},
                               "logit_diff": difference(dec, impl)}
        if dec.pos.device.type != "cuda":  # a smoke run (Triton's interpreter): no graphs, no rate
            return {**row, "tok_s": 0.0}
        dec.impl = impl
        dec.graphs = GraphRunner(dec)
        return {**row, "tok_s": replay_rate(dec, steps)}
    except Exception as err:  # noqa: BLE001 - a launch shape can exceed the chip's resources
        return {"error": f"{type(err).__name__}: {str(err)[:200]}"}


def accepted(row: dict[str, Any], args: argparse.Namespace) -> bool:
    """A measured shape whose per-layer error is within `--tolerance`, or `--noise` times bf16's floor."""
    limit = max(args.tolerance, args.noise * getattr(args, "floor", 0.0))
    return "tok_s" in row and row["layer_err"] <= limit  # NaN and inf compare False


#: `--pdl` choices: KernelConfig's dependent-launch settings (auto: the step's default, `TritonStep.dependent_launch`)
#: "on" and "prefetch" trigger dependent launch at the kernels' starts; "late" at every kernel's
#: programs' ends (`KernelConfig.pdl_late`), "late-experts" / "late-up" / "late-down" only for the
#: experts' kernels (bf16's and the quantized ones' names), each with the L2 prefetch
_UP, _DOWN = ("experts_up", "qexperts_up"), ("experts_down", "qexperts_down")
PDL_MODES: dict[str, dict[str, Any]] = {
    "auto": {}, "off": {"pdl": False}, "on": {"pdl": True, "prefetch": False, "pdl_late": ()},
    "prefetch": {"pdl": True, "prefetch": True, "pdl_late": ()},
    "late": {"pdl": True, "prefetch": True, "pdl_late": ("*",)},
    "late-experts": {"pdl": True, "prefetch": True, "pdl_late": _UP + _DOWN},
    "late-up": {"pdl": True, "prefetch": True, "pdl_late": _UP},
    "late-down": {"pdl": True, "prefetch": True, "pdl_late": _DOWN},
}


def pdl_settings(mode: str) -> dict[str, Any]:
    """A `--pdl` choice as KernelConfig fields: a `PDL_MODES` key, or `skip=NAME+NAME` (dependent launch
    and prefetch on, but not for the kernels named, e.g. `skip=experts_up+experts_down`)."""
    if mode.startswith("skip="):
        return {"pdl": True, "prefetch": True, "pdl_skip": tuple(mode.removeprefix("skip=").split("+"))}
    return PDL_MODES[mode]


def step_for(fmt: str, dec: Any, la: Any, pdl: str = "auto", close: str = "auto", head: str = "bf16") -> Any:
    """The decode step of format `fmt` under launch shape `la` (bf16: a `KernelConfig`), dependent
    launch setting `pdl` (see `pdl_settings`) and `close` (`KernelConfig.close`: 0, 1 or 2; auto: the
    step's or format's own). `head`: lm_head's format in a
    quantized step (bf16 as this synthetic model has it, or a format quantized here: the loaders hold
    it in `formats.HEAD_FORMAT`)."""
    from kimi_cli.engine.fast.quant_step import make_quant_step
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep

    settings = {**pdl_settings(pdl), "close": None if close == "auto" else int(close)}
    if fmt == "bf16":
        return TritonStep(dec.weights, dec.cache, dec.rope, replace(la, **settings))
    weights = dec.weights
    if head != "bf16":
        from kimi_cli.engine.fast.weights import QMatrix
        from kimi_cli.model.formats import get_format

        lm_head = weights.lm_head
        weights = replace(weights, lm_head=QMatrix(head, get_format(head).quantize(lm_head), tuple(lm_head.shape)))
    return make_quant_step(weights, dec.cache, dec.rope, KernelConfig(**settings), launch={fmt: la})


def run_format(fmt: str, args: argparse.Namespace, tried: list[Any], out: list[dict[str, Any]]) -> None:
    """Measure the launch shapes `tried` on a model in format `fmt`, appending rows to `out` (and
    writing them) until the format's time budget is spent."""
    import time

    import torch

    from kimi_cli.engine.fast import FastDecoder
    from kimi_cli.engine.fast.synthetic import build_model
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import quantize_modules

    t0 = time.monotonic()
    dev, dtype = args.device, (torch.bfloat16 if args.device == "cuda" else torch.float32)
    model = build_model(args.preset, device=dev, dtype=dtype, seed=0)
    if fmt != "bf16":
        quantize_modules(model.model, get_format(fmt))
    # room for the replays after the context (`replay_rate` writes a position per step)
    dec = FastDecoder(model.model, model.lm_head, args.context + args.steps + 64, dev, dtype, backend="torch")
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, args.context), device=dev, generator=gen)
    with torch.inference_mode():
        dec.prefill(model.model.embed_tokens(ids))
    for la in tried:
        if out and time.monotonic() - t0 > args.budget:
            print(f"{fmt}: budget of {args.budget:.0f} s spent, {len(tried) - tried.index(la)} shapes left", flush=True)
            break
        for pdl in args.pdl.split(","):
            for close in args.close.split(","):
                for head in (["bf16"] if fmt == "bf16" else args.head.split(",")):
                    t1 = time.monotonic()
                    out.append({"format": fmt, "launch": asdict(la), "pdl": pdl, "close": close, "head": head,
                                **measure(dec, step_for(fmt, dec, la, pdl, close, head), args.steps),
                                "seconds": round(time.monotonic() - t1, 1)})
                    print(json.dumps(out[-1]), flush=True)
        if fmt == "bf16" and not hasattr(args, "floor"):  # the default bf16 step: floor and reference rate
            args.floor = out[-1].get("layer_err", 0.0)
            args.bf16_rate = out[-1].get("tok_s") or 1.0
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    if args.profile and dev == "cuda":
        profile_best(fmt, dec, args, out)
    del dec, model
    if dev == "cuda":
        torch.cuda.empty_cache()


def profile_best(fmt: str, dec: Any, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Print the top kernels of a few graph replays of the format's fastest accepted shape."""
    from kimi_cli.bench.decode import replay_rate
    from kimi_cli.bench.explore import profile_table
    from kimi_cli.engine.fast.graphs import GraphRunner
    from kimi_cli.engine.fast.quant_step import QuantLaunch
    from kimi_cli.engine.fast.step import KernelConfig

    ok = [r for r in rows if r["format"] == fmt and accepted(r, args)]
    if not ok:
        return
    best = max(ok, key=lambda r: r["tok_s"])
    la = {k: tuple(v) if isinstance(v, list) else v for k, v in best["launch"].items()}
    dec.impl = step_for(fmt, dec, (KernelConfig if fmt == "bf16" else QuantLaunch)(**la), best["pdl"], best["close"], best["head"])
    dec.graphs = GraphRunner(dec)
    print(f"profile {fmt} {la} (--pdl {best['pdl']} --close {best['close']} --head {best['head']}): 10 replays", flush=True)
    print(profile_table(lambda: [replay_rate(dec, 1) for _ in range(10)], rows=18), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="int8,fp8,int4")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run under TRITON_INTERPRET=1 (no rates)")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tolerance", type=float, default=2e-2, help="largest per-layer relative error accepted")
    ap.add_argument("--noise", type=float, default=2.0, help="or this many times bf16's own error")
    ap.add_argument("--budget", type=float, default=100.0, help="seconds per format (its shapes, in order)")
    ap.add_argument("--bf16-variants", action="store_true", help="then bf16's KernelConfig variants")
    ap.add_argument("--quick", action="store_true", help="the default and other modes only")
    ap.add_argument("--modes", help="with --quick: comma-separated, the other modes tried (default: all the format has)")
    ap.add_argument("--only", type=json.loads, help='JSON {"int8": [[mode, block_n, block_k, warps, stages], ...]} or '
                    '{"int4": [{"block_n": 32}, ...]} (fields changed in the default launch): '
                    "these shapes after each format's default, instead of the built-in list")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of each format's best shape")
    ap.add_argument("--pdl", default="auto", help=f"comma-separated, each shape under each: {', '.join(PDL_MODES)}, skip=NAME+NAME")
    ap.add_argument("--close", default="auto", help="comma-separated, each shape under each: how an MoE layer "
                    "is closed (KernelConfig.close: 0, 1, 2; auto: the step's or format's own)")
    ap.add_argument("--head", default="bf16", help="comma-separated lm_head formats for the quantized steps: "
                    "bf16, int8 (quantized here, for the step alone)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write-best", type=Path, help="write the best shape per format as JSON")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    modes = tuple(int(m) for m in args.modes.split(",")) if args.modes else None
    plan = [("bf16", shapes("bf16", True))] + [(f, shapes(f, args.quick, args.only, modes))
                                               for f in args.formats.split(",") if f]
    if args.bf16_variants:
        plan.append(("bf16", shapes("bf16", False)[1:]))
    for fmt, tried in plan:
        run_format(fmt, args, tried, rows)
        print("", flush=True)
        report(rows, args)  # after each format: a run cut short keeps what it measured
    return 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the best shape per format measured so far; write --json and --write-best."""
    bf16, chosen = getattr(args, "bf16_rate", 1.0), {}
    for fmt in sorted({r["format"] for r in rows}):
        ok = [r for r in rows if r["format"] == fmt and accepted(r, args)]
        if ok:
            best = max(ok, key=lambda r: r["tok_s"])
            chosen[fmt] = best["launch"]
            kind = "KernelConfig" if fmt == "bf16" else "QuantLaunch"
            print(f"best {fmt}: {best['tok_s']:.1f} tok/s ({best['tok_s'] / bf16:.2f}x bf16 {bf16:.1f}), "
                  f"layer error {best['layer_err']:.1e} (floor {args.floor:.1e}), --pdl {best['pdl']} "
                  f"--close {best['close']} --head {best['head']}: {kind}(**{best['launch']})")
        else:
            print(f"best {fmt}: no shape within tolerance")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.write_best:
        args.write_best.write_text(json.dumps(chosen))


if __name__ == "__main__":
    sys.exit(main())
