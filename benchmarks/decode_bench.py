"""Batch-1 decode benchmark on a bare language model: a thin front for `kimi_cli.bench.decode`.

    PYTHONPATH=. python benchmarks/decode_bench.py --synthetic --contexts 512,8192,32768

The measurements are `kimi bench`'s own (`kimi_cli.bench.decode`: plain `generate()`, static cache +
compile, the engine's `FastDecoder`; `kimi_cli.bench.greedy`: the greedy check), run on a model that
needs no checkpoint on disk: `--synthetic` builds random full-size bf16 weights of Kimi-VL's language
model directly on the GPU (`--preset tiny --device cpu` for a smoke run), `--model-dir` loads a
`DeepseekV3ForCausalLM` directory. What only this script adds: back-to-back graph replay tok/s, a sweep
of kernel launch shapes and a profiler table (CUDA only). For a whole Kimi-VL checkpoint, use `kimi bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimi_cli.bench import decode, greedy  # noqa: E402
from kimi_cli.bench.timing import free_cuda  # noqa: E402


def build_target(args: argparse.Namespace) -> decode.DecodeTarget:
    """The language model under test."""
    import torch

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    if args.synthetic:
        from kimi_cli.engine.fast.synthetic import build_model

        model = build_model(args.preset, device=args.device, dtype=dtype, seed=0)
    else:
        from transformers import DeepseekV3ForCausalLM

        model = DeepseekV3ForCausalLM.from_pretrained(args.model_dir, dtype=dtype, device_map=args.device).eval()
    return decode.DecodeTarget.of_causal_lm(model)


def kernel_sweep(dec: Any, steps: int) -> list[str]:
    """Replay tok/s for a few kernel launch shapes on the decoder's current cache (CUDA)."""
    from kimi_cli.engine.fast.graphs import GraphRunner
    from kimi_cli.engine.fast.step import KernelConfig, TritonStep

    configs = [KernelConfig(), KernelConfig(up_block_n=64), KernelConfig(down_block_n=64),
               KernelConfig(gemv_block_k=128), KernelConfig(up_block_k=128)]
    out = []
    for cfg in configs:
        dec.impl = TritonStep(dec.weights, dec.cache, dec.rope, cfg)
        dec.graphs = GraphRunner(dec)
        try:
            out.append(f"{decode.replay_rate(dec, steps):.1f} tok/s {cfg!r}")
        except Exception as err:  # noqa: BLE001 - a launch shape can exceed the chip's resources
            out.append(f"failed {cfg!r}: {type(err).__name__}")
    dec.impl = TritonStep(dec.weights, dec.cache, dec.rope, KernelConfig())
    dec.graphs = GraphRunner(dec)
    return out


def profile(dec: Any, steps: int = 3) -> str:
    """Top kernels of a few greedy graph replays (CUDA)."""
    from kimi_cli.bench.explore import profile_table

    return profile_table(lambda: [decode.replay_rate(dec, 1) for _ in range(steps)])


def run_context(target: decode.DecodeTarget, context: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement at one context length, as a JSON-ready row."""
    import torch

    ids = decode.random_context(target.model.config.vocab_size, context, target.device)
    row: dict[str, Any] = {"context": context, "runs": [], "notes": []}
    plain = None
    if not args.skip_plain:
        run, tokens, logits = decode.plain_decode(target.model, ids, args.check_tokens)
        row["runs"].append(asdict(run))
        plain = (tokens, logits)
    if args.static:
        row["runs"].append(asdict(decode.static_decode(target.model, ids, args.check_tokens)))
    with torch.inference_mode():
        embeds = target.language_model.embed_tokens(ids)
        run, ours, dec = decode.fast_decode(target, embeds, args.new_tokens)
        row["runs"].append(asdict(run))
        if plain is not None:
            forced = greedy.forced_logits(dec, embeds, plain[0])
            floor = greedy.full_forward_logits(target.language_model, target.lm_head, embeds, plain[0])
            row["greedy"] = asdict(greedy.check(f"{context} random tokens", ours, *plain, forced, floor))
    if str(target.device).startswith("cuda"):
        row["replay_tok_s"] = decode.replay_rate(dec, args.new_tokens)
        if args.sweep:
            row["notes"] += kernel_sweep(dec, args.new_tokens)
        if args.profile:
            print(profile(dec), flush=True)
    del dec
    free_cuda()
    print(json.dumps(row, default=str), flush=True)
    return row


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", action="store_true", help="random-weight language model built on the device")
    src.add_argument("--model-dir", help="a DeepseekV3ForCausalLM checkpoint directory")
    p.add_argument("--preset", default="full", choices=("tiny", "full"), help="shapes for --synthetic")
    p.add_argument("--device", default="cuda")
    p.add_argument("--contexts", default="512,8192,32768")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens timed on the fast path")
    p.add_argument("--check-tokens", type=int, default=64, help="tokens on the plain path (timed and compared)")
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--static", action="store_true", help="also time static cache + compile")
    p.add_argument("--sweep", action="store_true", help="try several kernel launch shapes (CUDA)")
    p.add_argument("--profile", action="store_true", help="print the top kernels of a few replays (CUDA)")
    p.add_argument("--json", help="write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every context; print one JSON row per context (and write them all with --json)."""
    from kimi_cli.bench.runner import parse_contexts

    args = parse(argv)
    target = build_target(args)
    rows = [run_context(target, ctx, args) for ctx in parse_contexts(args.contexts)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
