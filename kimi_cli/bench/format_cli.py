"""Glue for `kimi bench --quantize`: parse the formats, make the test image, run, print the table."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from kimi_cli.errors import UsageError


def parse_formats(text: str) -> tuple[str, ...]:
    """`bf16,int8` -> ("bf16", "int8"), checked against the known formats."""
    from kimi_cli.model.formats import FORMAT_NAMES

    names = tuple(dict.fromkeys(filter(None, (t.strip() for t in text.split(",")))))
    if not names or any(n not in FORMAT_NAMES for n in names):
        raise UsageError(f"--quantize {text}: unknown format", hint="use some of: " + ",".join(FORMAT_NAMES))
    return names


def bench_formats(opts: Any, text: str, max_gpu_memory: str | None = None) -> int:
    """Run the format comparison; returns the exit code (1 when a measurement failed)."""
    from kimi_cli.app.engines import quiet_libraries
    from kimi_cli.bench import stages
    from kimi_cli.bench.formats import formats_markdown, run_formats
    from kimi_cli.bench.report import BenchReport
    from kimi_cli.bench.runner import model_dir
    from kimi_cli.sizes import parse_size

    formats = parse_formats(text)
    cap = parse_size(max_gpu_memory) if max_gpu_memory else None
    quiet_libraries()
    report = BenchReport(env={}, options={})
    model = model_dir(opts, report)
    with tempfile.TemporaryDirectory(prefix="kimi-bench-") as tmp:
        image = stages.prepare_image(Path(tmp), opts, report) if opts.image_size else None
        runs = run_formats(model, formats, opts.device, opts, image, opts.json_path, cap)
    sys.stdout.write(formats_markdown(runs, opts.contexts))
    return 1 if any(r.errors for r in runs) else 0
