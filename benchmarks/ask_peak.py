"""Run `kimi ask ARGS...` in this process and report its peak GPU memory on stderr at exit.

    PYTHONPATH=. python benchmarks/ask_peak.py examples/chelsea.png "Describe it." --model DIR --format json

`kimi ask --format json` reports load time, time to first token and tokens/s but not memory; this
wrapper adds one line, `peak GPU memory: allocated X GiB, reserved Y GiB`, after the command ends.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def report_peak() -> None:
    """Print the process's peak allocated and reserved GPU memory (nothing without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return
    gib = 1024**3
    sys.stderr.write(f"peak GPU memory: allocated {torch.cuda.max_memory_allocated() / gib:.2f} GiB, "
                     f"reserved {torch.cuda.max_memory_reserved() / gib:.2f} GiB\n")


def main(argv: list[str] | None = None) -> None:
    """`kimi ask` with `argv`, then the memory line."""
    from kimi_cli.cli import main as kimi_main

    atexit.register(report_peak)
    kimi_main(["ask", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
