"""`kimi ask` with and without a warm `kimi serve`: start to first text, and a shell loop over many files.

Usage (the integrator runs it on the GPU with the full checkpoint; on a CPU use the tiny one):

    python benchmarks/serve_bench.py --model DIR [--image examples/chelsea.png] [--files 100]
        [--local-files 5] [--reps 3] [--max-new-tokens 64] [--json out.json]

It measures real processes, as a user's shell would run them:
* fresh: `kimi ask IMAGE PROMPT --backend local` (loads the model every time);
* warm: `kimi ask IMAGE PROMPT --backend server` against a `kimi serve` started once beforehand;
* loop: `kimi ask` over `--files` copies of the image (each slightly different, so no cache is hit),
  one after another, each way.
"Start to first text" is from process start to the first byte on stdout or stderr: with
`--format plain --thinking show` and stderr a pipe, the first byte is the first thinking or
answer text (no loading lines are printed in a pipe).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "What is in this picture?"


def kimi(*args: str) -> list[str]:
    """The command line of `kimi` in this interpreter (works from a checkout)."""
    return [sys.executable, "-m", "kimi_cli", *args]


def first_text(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds to the first output byte, seconds to exit, exit code) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    selector = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        selector.register(stream, selectors.EVENT_READ)
    first = None
    open_streams = 2
    while open_streams:
        for key, _ in selector.select():
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
            elif first is None:
                first = time.perf_counter() - start
    code = proc.wait()
    total = time.perf_counter() - start
    return (first if first is not None else total), total, code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, env: dict[str, str], extra: list[str]) -> tuple[subprocess.Popen, float]:
    """Start `kimi serve` and wait until /health answers; returns the process and its start time."""
    import httpx

    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen(kimi("serve", "--model", model, "--port", str(port), *extra), env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if proc.poll() is not None:
            raise SystemExit("kimi serve failed:\n" + proc.stderr.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, time.perf_counter() - start
        except httpx.HTTPError:
            time.sleep(0.2)


def make_files(image: Path, count: int, folder: Path) -> list[Path]:
    """`count` copies of `image`, each with one pixel changed (distinct content, same size)."""
    from PIL import Image

    base = Image.open(image).convert("RGB")
    paths = []
    for i in range(count):
        copy = base.copy()
        copy.putpixel((i % copy.width, (i // copy.width) % copy.height), (i % 256, 0, 0))
        path = folder / f"shot-{i:03d}.png"
        copy.save(path)
        paths.append(path)
    return paths


def ask_args(model: str, image: Path, backend: str, max_new_tokens: int) -> list[str]:
    return kimi("ask", str(image), PROMPT, "--model", model, "--backend", backend, "--format", "plain",
                "--thinking", "show", "--temperature", "0", "--max-new-tokens", str(max_new_tokens))


def loop(model: str, files: list[Path], backend: str, env: dict[str, str], max_new_tokens: int) -> float:
    """Total seconds of `kimi ask` over every file, one after another; fails on any error."""
    start = time.perf_counter()
    for path in files:
        _, _, code = first_text(ask_args(model, path, backend, max_new_tokens), env)
        if code:
            raise SystemExit(f"kimi ask {path} exited with {code}")
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix="kimi-bench-run-")}
    env.pop("KIMI_API_BASE", None)
    image = Path(args.image)
    results: dict[str, Any] = {"model": args.model, "image": str(image), "files": args.files}
    fresh = [first_text(ask_args(args.model, image, "local", args.max_new_tokens), env)
             for _ in range(args.reps if args.fresh_reps is None else args.fresh_reps)]
    if fresh:
        results["fresh_first_text_s"] = median(f for f, _, _ in fresh)
    server, ready = start_server(args.model, env, args.serve_arg or [])
    results["serve_ready_s"] = ready
    try:
        first_text(ask_args(args.model, image, "server", args.max_new_tokens), env)  # warm-up turn
        warm = [first_text(ask_args(args.model, image, "server", args.max_new_tokens), env)
                for _ in range(args.reps)]
        results["warm_first_text_s"] = median(f for f, _, _ in warm)
        results["warm_total_s"] = median(t for _, t, _ in warm)
        if args.files:
            with tempfile.TemporaryDirectory(prefix="kimi-bench-files-") as tmp:
                files = make_files(image, args.files, Path(tmp))
                results["loop_server_s"] = loop(args.model, files, "server", env, args.max_new_tokens)
                server.terminate()
                server.wait(timeout=60)
                local = files[: args.local_files or len(files)]
                results["local_files"] = len(local)
                results["loop_local_s"] = loop(args.model, local, "local", env, args.max_new_tokens)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=60)
    return results


def table(r: dict[str, Any]) -> str:
    rows = [("fresh `kimi ask`, start to first text", r["fresh_first_text_s"])] if "fresh_first_text_s" in r else []
    rows += [("`kimi serve` start until ready", r["serve_ready_s"]),
            ("`kimi ask` via warm server, start to first text", r["warm_first_text_s"]),
            ("`kimi ask` via warm server, start to exit", r["warm_total_s"])]
    if "loop_server_s" in r:
        rows.append((f"{r['files']}-file loop with the server", r["loop_server_s"]))
        n = r["local_files"]
        if n == r["files"]:
            rows.append((f"{n}-file loop without the server", r["loop_local_s"]))
        else:  # fresh processes cost the same each time: a few stand for the many
            rows += [(f"{n}-file loop without the server (measured)", r["loop_local_s"]),
                     (f"{r['files']}-file loop without the server ({n} measured, scaled)",
                      r["loop_local_s"] * r["files"] / n)]
    width = max(len(name) for name, _ in rows)
    lines = [f"model: {r['model']}   image: {r['image']}", f"{'measurement'.ljust(width)}  seconds",
             f"{'-' * width}  -------"]
    lines += [f"{name.ljust(width)}  {value:7.2f}" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or checkpoint directory")
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--files", type=int, default=100, help="files in the shell loop (0: no loop)")
    parser.add_argument("--local-files", type=int, default=0,
                        help="run the loop without the server over only the first N files and scale (0: all)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each single-run measurement")
    parser.add_argument("--fresh-reps", type=int, help="fresh (no server) runs to time [default: --reps]")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--serve-arg", action="append", help="extra `kimi serve` argument (repeatable)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
