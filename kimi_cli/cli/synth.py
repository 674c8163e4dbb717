"""`kimi synth OUT_DIR`: write a random-weight checkpoint in the official Kimi-VL layout."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Annotated

import typer

from kimi_cli.cli.app import app
from kimi_cli.cli.options import OutDirArg
from kimi_cli.textsafe import printable


@app.command()
def synth(
    out_dir: OutDirArg,
    preset: Annotated[str, typer.Option("--preset", "-p", help="tiny, tiny-thinking or full.")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random weights.")] = 0,
    device: Annotated[str, typer.Option("--device", help="Where to draw the random numbers (cpu or cuda).")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty directory.")] = False,
) -> None:
    """Write a synthetic checkpoint (random weights, official file and tensor names) for tests and benchmarks.

    tiny runs on a CPU in seconds; tiny-thinking is tiny briefly fitted to answer in the
    ◁think▷…◁/think▷ format; full has the real shapes (32.8 GB in bf16) for GPU benchmarks.
    """
    from kimi_cli.model.synth_output import check_request, synthesize

    check_request(out_dir, preset, force)  # before anything heavy is imported
    from kimi_cli.app.engines import quiet_libraries

    quiet_libraries()
    start = time.perf_counter()
    with _fit_progress() if preset == "tiny-thinking" else nullcontext() as progress:
        synthesize(out_dir, preset=preset, seed=seed, device=device, force=force, progress=progress)
    sys.stderr.write(f"wrote {preset} checkpoint to {printable(str(out_dir))} in {time.perf_counter() - start:.1f} s\n")


@contextmanager
def _fit_progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar for the fit on a terminal's stderr; nothing in a pipe."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("fitting tiny-thinking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("fit", total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)
