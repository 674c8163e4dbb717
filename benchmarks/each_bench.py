"""`kimi ask --each` over N images against N separate `kimi ask` calls, and constrained decoding's cost.

    PYTHONPATH=. python benchmarks/each_bench.py --model DIR -n 100 --serve-args "--backend server" --json each.json
        [--separate-n 2]   # time 2 separate local calls (a model load each) and scale to -n
    PYTHONPATH=. python benchmarks/each_bench.py --model /tmp/tiny -n 3 --max-new-tokens 16   # CPU smoke

Three measurements, each printed as a line and written to `--json`:

1. `each`: one `kimi ask --each IMG... PROMPT --format jsonl` process (one model load), wall time.
2. `separate`: N `kimi ask IMG PROMPT` processes one after another (N loads), wall time.
   With `--serve-args "--backend server"` (how `kimi ask` reaches the server: it finds a running
   `kimi serve` of the same model by itself), both are run again through it; the server is started
   with `--serve-cmd` (default `kimi serve --model DIR --port 8765`) and waited for.
3. `constrained`: in this process, one engine, the same request free and under a JSON schema,
   decode tokens/s from the engine's own `Finished.tokens_per_s` (median of `--repeats`).

The images are N distinct PNG files (a noise pattern seeded by the index), so no cache can serve a
file twice. Greedy decoding with a fixed `--max-new-tokens` keeps the work per file the same.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCHEMA = {"type": "object", "properties": {
    "caption": {"type": "string", "maxLength": 80}, "kind": {"enum": ["photo", "drawing", "document"]},
    "objects": {"type": "number", "minimum": 0, "maximum": 100}},
    "required": ["caption", "kind", "objects"], "additionalProperties": False}


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    """N distinct PNGs of `size` x `size` pixels."""
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def kimi(*args: str) -> list[str]:
    return [sys.executable, "-m", "kimi_cli", "ask", *args]


def timed(cmd: list[str]) -> float:
    """Seconds a command took; its failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd[:8])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def run_pair(images: list[Path], common: list[str], prompt: str, separate_n: int = 0) -> dict[str, float]:
    """`--each` once against one process per image (the first `separate_n` of them, scaled, if given:
    separate processes each pay the same start, so a few stand for many)."""
    each = timed(kimi("--each", *map(str, images), prompt, "--format", "jsonl", *common))
    timed_images = images[:separate_n] if separate_n else images
    measured = sum(timed(kimi(str(img), prompt, "--format", "json", *common)) for img in timed_images)
    separate = measured * len(images) / len(timed_images)
    return {"each_s": each, "separate_s": separate, "separate_measured": len(timed_images),
            "speedup": separate / each if each else float("nan")}


def start_server(cmd: str, port: int, timeout: float = 600.0) -> subprocess.Popen[bytes]:
    """Start `kimi serve` and wait until its port accepts connections."""
    proc = subprocess.Popen(shlex.split(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the server did not come up")


def constrained_cost(model: str, tokens: int, repeats: int, decoder: str) -> dict[str, float]:
    """Decode tokens/s of the same request, free and under `SCHEMA` (one engine, warm)."""
    from kimi_cli.app.engines import make_engine
    from kimi_cli.conversation import GenerationSettings, Message, Request
    from kimi_cli.events.types import Finished
    from kimi_cli.settings import Settings

    engine = make_engine(Settings().with_values("bench", model=model, decoder=decoder))
    rates: dict[str, list[float]] = {"free": [], "schema": []}
    message = Message.text("user", "Describe a photo of a cat as JSON.")
    try:
        for _ in range(repeats + 1):  # the first round warms up (graphs, grammar tokenizer)
            for name, schema in (("free", None), ("schema", json.dumps(SCHEMA))):
                settings = GenerationSettings(max_new_tokens=tokens, temperature=0.8, seed=0, think_budget=0,
                                              json_schema=schema)
                end = [e for e in engine.stream(Request((message,), settings)) if isinstance(e, Finished)][-1]
                if end.tokens_per_s:
                    rates[name].append(end.tokens_per_s)
    finally:
        engine.close()
    free = statistics.median(rates["free"][1:] or rates["free"])
    schema = statistics.median(rates["schema"][1:] or rates["schema"])
    return {"free_tokens_per_s": free, "schema_tokens_per_s": schema, "cost": 1 - schema / free}


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the measurements, print and save them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("-n", type=int, default=100, help="images")
    p.add_argument("--size", type=int, default=448, help="image side in pixels")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--prompt", default="Caption this image in one sentence.")
    p.add_argument("--decoder", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--separate-n", type=int, default=0,
                   help="time only this many separate local calls and scale to -n (0: all)")
    p.add_argument("--serve-args", default=None, help="backend flags that reach a running kimi serve")
    p.add_argument("--serve-cmd", default=None, help="command that starts kimi serve")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--json", dest="json_out", default=None, help="written after each part (a cut run keeps its parts)")
    p.add_argument("--parts", default="local,served,constrained", help="which measurements to run")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    common = ["--model", args.model, "--temperature", "0", "--max-new-tokens", str(args.max_new_tokens),
              "--decoder", args.decoder, "--no-stdin"]
    report: dict[str, object] = {"n": args.n, "size": args.size, "max_new_tokens": args.max_new_tokens}

    def save() -> None:
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp), args.n, args.size)
        if "local" in parts:
            report["local"] = local = run_pair(images, common, args.prompt, args.separate_n)
            save()
            print(f"local: --each {local['each_s']:.1f} s, separate {local['separate_s']:.1f} s"
                  f" ({local['separate_measured']} measured)", flush=True)
        if args.serve_args and "served" in parts:
            cmd = args.serve_cmd or f"{sys.executable} -m kimi_cli serve --model {args.model} --port {args.port}"
            server = start_server(cmd, args.port)
            try:
                served = ["--model", args.model, "--max-new-tokens", str(args.max_new_tokens), "--temperature", "0",
                          "--no-stdin", *shlex.split(args.serve_args)]
                report["served"] = run_pair(images, served, args.prompt)
            finally:
                server.terminate()
                server.wait(timeout=30)
            save()
            print(f"served: --each {report['served']['each_s']:.1f} s, separate {report['served']['separate_s']:.1f} s",
                  flush=True)
    if "constrained" in parts:
        report["constrained"] = c = constrained_cost(args.model, args.max_new_tokens, args.repeats, args.decoder)
        save()
        print(f"constrained: {c['free_tokens_per_s']:.1f} tokens/s free, {c['schema_tokens_per_s']:.1f} under a schema")


if __name__ == "__main__":
    main()
