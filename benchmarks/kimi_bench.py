"""Standalone `kimi bench`: the same measurements without the installed CLI.

    PYTHONPATH=. python benchmarks/kimi_bench.py --model DIR --engines plain,fast --json out.json

Side by side: plain transformers `generate()`, transformers' static cache + compile, and our engine
(`LocalEngine` fast mode / `FastDecoder`): load time; warm time to first token of a 1792x1792 image plus
a question, split into preprocessing, vision tower and prefill; decode tok/s at batch 1 for each context;
peak GPU memory; a fresh `kimi ask` process's time to first token without the weight read; and the
greedy check of our engine against the plain path. See kimi_cli/bench/ for the pieces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimi_cli.bench.runner import BenchOptions, parse_contexts, parse_engines, run_bench  # noqa: E402


def parse(argv: list[str] | None = None) -> BenchOptions:
    """Command-line options -> `BenchOptions`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="hub id or checkpoint directory")
    p.add_argument("--synthetic-full", action="store_true", help="random full-size weights (written once)")
    p.add_argument("--synth-dir", type=Path)
    p.add_argument("--contexts", default="512,8192,32768")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--check-tokens", type=int, default=64)
    p.add_argument("--engines", default="plain,static,fast")
    p.add_argument("--image-size", type=int, default=1792)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--fresh-runs", type=int, default=1)
    p.add_argument("--explore", action="store_true")
    p.add_argument("--profile-dir", type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    return BenchOptions(
        model=a.model, synthetic_full=a.synthetic_full, synth_dir=a.synth_dir, contexts=parse_contexts(a.contexts),
        tokens=a.tokens, check_tokens=min(a.check_tokens, a.tokens), engines=parse_engines(a.engines),
        image_size=a.image_size, reps=a.reps, fresh_runs=a.fresh_runs, explore=a.explore,
        profile_dir=a.profile_dir, device=a.device, json_path=a.json,
        argv=tuple(["python", "benchmarks/kimi_bench.py", *(sys.argv[1:] if argv is None else argv)]),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; exit 1 if a stage failed."""
    report = run_bench(parse(argv))
    sys.stdout.write(report.markdown())
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
