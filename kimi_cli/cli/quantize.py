"""`kimi quantize MODEL --format int8|fp8|int4 [-o DIR]`: write a quantized checkpoint that loads faster."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kimi_cli.cli.app import app

QUANT_FORMATS = ("int8", "fp8", "int4")


@app.command()
def quantize(
    model: Annotated[str, typer.Argument(help="Hub id or local directory of the original checkpoint.")],
    fmt: Annotated[str, typer.Option("--format", help="int8, fp8 or int4.")] = "int8",
    out: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Directory to write [default: $XDG_CACHE_HOME/kimi/quantized/NAME-FORMAT].",
        show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="Where to quantize: auto (a GPU when visible) or cpu.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output directory.")] = False,
) -> None:
    """Convert the language model's matrices to FORMAT (official layout plus scales) and print the directory.

    `kimi ask --model DIR` then loads it without quantizing: half (int8, fp8) or a quarter (int4) of the
    bytes to read. Example: kimi quantize moonshotai/Kimi-VL-A3B-Thinking-2506 --format fp8
    """
    from kimi_cli.errors import UsageError

    if fmt not in QUANT_FORMATS:
        raise UsageError(f"--format {fmt}: unknown format", hint="use one of: " + ", ".join(QUANT_FORMATS))
    from kimi_cli.app.engines import quiet_libraries
    from kimi_cli.model.checkpoint import pick_device, resolve_model
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qwrite import default_output, write_quantized

    quiet_libraries()
    src = resolve_model(model)
    target = out or default_output(model, fmt, os.environ)
    start = time.perf_counter()
    count = write_quantized(src, get_format(fmt), target, device=pick_device(device), force=force)
    sys.stderr.write(f"wrote {count} tensors ({fmt}) to {target} in {time.perf_counter() - start:.1f} s\n")
    sys.stdout.write(f"{target}\n")
