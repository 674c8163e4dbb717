"""Fresh `kimi ask` processes, one after another: start to the first model text, and what stderr said.

    PYTHONPATH=. python benchmarks/fresh_ask.py --model DIR [--runs 2] [--clear-kernels] [--json OUT]

Each process runs `kimi ask IMAGE PROMPT --format jsonl --backend local`; the first text is the first
`thinking` or `answer` event on stdout (so a note on stderr before the load does not count). With
`--clear-kernels` kimi's Triton cache (`$XDG_CACHE_HOME/kimi/triton`) is removed before the first run,
so the first run is a machine's first run and the later ones find their kernels cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_run(model: str, image: str, prompt: str, tokens: int) -> dict[str, Any]:
    """Seconds to the first text event and to exit, the exit code and stderr of one process."""
    cmd = [sys.executable, "-m", "kimi_cli", "ask", image, prompt, "--model", model, "--backend", "local",
           "--format", "jsonl", "--temperature", "0", "--max-new-tokens", str(tokens)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=ROOT, text=True)
    first = None
    for line in proc.stdout:
        if first is None and line.startswith(('{"type": "thinking"', '{"type": "answer"')):
            first = time.perf_counter() - start
    err = proc.stderr.read()
    code = proc.wait()
    total = time.perf_counter() - start
    return {"first_text_s": first, "total_s": total, "exit": code, "stderr": err.strip().splitlines()[-6:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    p.add_argument("--prompt", default="What is in this picture?")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--clear-kernels", action="store_true", help="remove kimi's Triton cache first")
    p.add_argument("--json")
    args = p.parse_args()
    from kimi_cli.cachedir import kimi_cache

    if args.clear_kernels:
        shutil.rmtree(kimi_cache(os.environ) / "triton", ignore_errors=True)
    runs = []
    for i in range(args.runs):
        run = one_run(args.model, args.image, args.prompt, args.tokens)
        runs.append(run)
        first = "none" if run["first_text_s"] is None else f"{run['first_text_s']:.2f}"
        print(f"run {i + 1}: first text {first} s, exit {run['exit']} after {run['total_s']:.2f} s", flush=True)
        for line in run["stderr"]:
            print(f"  stderr: {line}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2) + "\n")


if __name__ == "__main__":
    main()
