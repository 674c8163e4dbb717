"""`kimi bench`: plain transformers, its static cache + compile, and our engine, measured side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app


@app.command()
def bench(
    model: o.ModelOpt = None,
    synthetic_full: Annotated[bool, typer.Option(
        "--synthetic-full", help="Benchmark random full-size weights (written once to --synth-dir).")] = False,
    synth_dir: Annotated[Path | None, typer.Option(
        "--synth-dir", help="Where --synthetic-full keeps its checkpoint [default: $TMPDIR/kimi-bench-full].",
        show_default=False)] = None,
    contexts: Annotated[str, typer.Option("--contexts", help="Context lengths for decode speed.")] = "512,8192,32768",
    tokens: Annotated[int, typer.Option("--tokens", min=2, help="Tokens decoded per measurement.")] = 128,
    check_tokens: Annotated[int, typer.Option(
        "--check-tokens", min=1, help="Greedy tokens compared between our engine and plain.")] = 64,
    engines: Annotated[str, typer.Option(
        "--engines", help="Any of plain, static (slow to compile), fast.")] = "plain,static,fast",
    image_size: Annotated[int, typer.Option("--image-size", min=28, help="Side of the square test image.")] = 1792,
    reps: Annotated[int, typer.Option("--reps", min=1, help="Timed repetitions of each TTFT measurement.")] = 3,
    fresh_runs: Annotated[int, typer.Option(
        "--fresh-runs", min=0, help="Fresh `kimi ask` processes timed (first token, weight read excluded).")] = 1,
    seen: Annotated[str, typer.Option(
        "--seen", help="User-seen tok/s (the `kimi ask` path) for these inputs: any of image, pdf, video; "
        "empty or 0: off; auto: all three where our engine runs (a CUDA GPU), none elsewhere.")] = "auto",
    seen_tokens: Annotated[int, typer.Option(
        "--seen-tokens", min=0, help="Answer length for --seen (0: off).")] = 512,
    explore: Annotated[bool, typer.Option(
        "--explore", help="Also time SDPA backends, GPU preprocessing and profile the TTFT pieces.")] = False,
    profile_dir: Annotated[Path | None, typer.Option(
        "--profile-dir", help="With --explore: write profiler tables here.")] = None,
    device: o.DeviceOpt = None,
    quantize: Annotated[str | None, typer.Option(
        "--quantize", help="Measure these weight formats side by side instead, e.g. bf16,int8,fp8,int4.",
        show_default=False)] = None,
    max_gpu_memory: Annotated[str | None, typer.Option(
        "--max-gpu-memory", help="With --quantize: cap the process at SIZE (e.g. 24GiB) for the quantized formats.",
        show_default=False)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every number as JSON here.")] = None,
) -> None:
    """Measure load time, time to first token (image + question), decode tok/s and memory; print a table.

    Example: kimi bench --synthetic-full --engines plain,fast --json bench.json
    """
    from kimi_cli.bench.runner import BenchOptions, parse_contexts, parse_engines, parse_seen, run_bench
    from kimi_cli.settings import BY_NAME

    for name, value in (("model", model), ("device", device)):
        if value is not None:
            BY_NAME[name].parse(value, f"--{name} {value}")

    opts = BenchOptions(
        model=model, synthetic_full=synthetic_full, synth_dir=synth_dir, contexts=parse_contexts(contexts),
        tokens=tokens, check_tokens=min(check_tokens, tokens), engines=parse_engines(engines),
        image_size=image_size, reps=reps, fresh_runs=fresh_runs, seen=parse_seen(seen), seen_tokens=seen_tokens,
        explore=explore, profile_dir=profile_dir,
        device=device or "auto", json_path=json_out, argv=tuple(["kimi", *sys.argv[1:]]),
    )
    if quantize:
        from kimi_cli.bench.format_cli import bench_formats

        raise typer.Exit(bench_formats(opts, quantize, max_gpu_memory))
    report = run_bench(opts)
    sys.stdout.write(report.markdown())
    if report.errors:
        raise typer.Exit(1)
