"""Time a fresh-process model load: where the seconds go (phases) and how fast the bytes come in.

    PYTHONPATH=. python benchmarks/load_bench.py --model DIR                  # page cache (warmed first)
    PYTHONPATH=. python benchmarks/load_bench.py --model DIR --cold           # evict the files first
    PYTHONPATH=. python benchmarks/load_bench.py --model DIR --quantize int8  # a quantized load
        [--repeats 3] [--threads 8] [--chunk-mb 256] [--device cuda] [--no-prefetch] [--json out.json]

Each repeat runs `load_model` in a new Python process (as a fresh `kimi ask` does) and prints its
wall time from process start, `load_model`'s own seconds, and the phases of `LoadedModel.load_phases`
with the streamed GB/s. Without `--cold` the checkpoint is read once first so it is in the page cache.
With `--cold` each repeat first drops the checkpoint's files from the page cache
(`posix_fadvise(POSIX_FADV_DONTNEED)` per file, after an fsync; no root needed) and says whether that
worked, by timing a 64 MiB read from the largest shard before and after (then evicting it again) and
by asking `mincore` how many of the files' pages are still cached. (On a VM whose disk the host
caches, an evicted read can still be fast: the percentage is the better witness there.)
`--threads` and `--chunk-mb` set the stream's reader threads and chunk size in the child, for sweeps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kimi_cli.model.prefetch import evict, uncached_fraction  # noqa: E402 - the page cache's helpers

SAMPLE = 64 << 20

CHILD = """
import json, sys, time
start = time.perf_counter()
args = json.loads(sys.argv[1])
if args["threads"] or args["chunk_mb"]:  # imports torch before load_model's clock starts
    from kimi_cli.model import stream
    stream.READ_THREADS = args["threads"] or stream.READ_THREADS
    stream.CHUNK_BYTES = (args["chunk_mb"] << 20) or stream.CHUNK_BYTES
if args["no_prefetch"]:
    from kimi_cli.model import prefetch
    prefetch.ENABLED = False
from kimi_cli.model.checkpoint import load_model
loaded = load_model(args["model"], device=args["device"], quantize=args["quantize"])
if loaded.device.type == "cuda":
    import torch
    torch.cuda.synchronize()
print(json.dumps({"since_start_s": time.perf_counter() - start, "load_s": loaded.load_seconds,
                  "format": loaded.weight_format, "device": str(loaded.device),
                  "phases": loaded.load_phases.as_dict()}))
"""


def shards(model: Path) -> list[Path]:
    """The checkpoint's weight files."""
    return sorted(model.glob("*.safetensors"))


def sample_read_gbps(path: Path) -> float:
    """GB/s of a SAMPLE-byte read from the middle of `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = max(0, os.fstat(fd).st_size // 2 - SAMPLE // 2)
        start, got = time.perf_counter(), 0
        while got < SAMPLE:
            chunk = os.pread(fd, min(16 << 20, SAMPLE - got), offset + got)
            if not chunk:
                break
            got += len(chunk)
        return got / max(time.perf_counter() - start, 1e-9) / 1e9
    finally:
        os.close(fd)


def evict_and_check(files: list[Path]) -> str:
    """Evict the files; one line saying whether it worked, judged by a sample read's speed (and by
    `mincore` where it can be asked)."""
    largest = max(files, key=lambda f: f.stat().st_size)
    sample_read_gbps(largest)
    warm = sample_read_gbps(largest)
    evict(files)
    missing = uncached_fraction(files)  # sampled with `mincore`; None where that cannot be asked
    resident = None if missing is None else 1.0 - missing
    cold = sample_read_gbps(largest)
    evict([largest])  # the sample read brought its pages back
    by_time = cold < warm / 3
    worked = by_time if resident is None else resident < 0.05
    verdict = "worked" if worked else "did NOT work (the files may still be cached)"
    cached = "" if resident is None else f"; {100 * resident:.1f}% of the pages still cached (mincore)"
    return (f"eviction {verdict}: a 64 MiB read ran at {warm:.1f} GB/s cached, {cold:.2f} GB/s after "
            f"eviction{cached}")


def warm_up(files: list[Path]) -> float:
    """Read every file once (into the page cache); returns GB/s of that read."""
    start, total = time.perf_counter(), 0
    for f in files:
        with f.open("rb") as handle:
            while block := handle.read(64 << 20):
                total += len(block)
    return total / max(time.perf_counter() - start, 1e-9) / 1e9


def run_child(args: argparse.Namespace) -> dict:
    """One fresh-process load; its JSON record plus the wall time of the whole process."""
    spec = {"model": str(args.model), "device": args.device, "quantize": args.quantize,
            "threads": args.threads, "chunk_mb": args.chunk_mb, "no_prefetch": args.no_prefetch}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"load failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["process_wall_s"] = wall
    return record


def describe(record: dict) -> str:
    """One line for a repeat."""
    phases = record["phases"]
    named = ", ".join(f"{k} {v:.2f}" for k, v in phases.items()
                      if not k.startswith("stream_") and not k.endswith("_bytes") and v >= 0.005)
    gbps = phases.get("stream_gb_per_s")
    rate = f"; {phases['stream_bytes'] / 1e9:.2f} GB streamed at {gbps:.1f} GB/s" if gbps else ""
    if phases.get("prefetched_bytes"):
        rate += f"; {phases['prefetched_bytes'] / 1e9:.2f} GB read ahead during the imports"
    return (f"process {record['process_wall_s']:.2f} s, load_model {record['load_s']:.2f} s "
            f"({record['format']} on {record['device']}): {named}{rate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--quantize", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cold", action="store_true", help="evict the checkpoint from the page cache first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="stream reader threads (0: the default)")
    parser.add_argument("--chunk-mb", type=int, default=0, help="stream chunk size in MiB (0: the default)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="no read-ahead of the weight files during the imports (`model.prefetch`)")
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args()
    files = shards(args.model)
    if not files:
        sys.exit(f"{args.model}: no *.safetensors files")
    size = sum(f.stat().st_size for f in files)
    print(f"{args.model}: {len(files)} shards, {size / 1e9:.2f} GB; mode {'cold' if args.cold else 'page cache'}")
    if not args.cold:
        print(f"warm-up read: {warm_up(files):.1f} GB/s")
    records = []
    for i in range(args.repeats):
        if args.cold:
            print(f"[{i + 1}] {evict_and_check(files)}")
        record = run_child(args)
        records.append(record)
        print(f"[{i + 1}] {describe(record)}")
    loads = [r["load_s"] for r in records]
    print(f"load_model median {statistics.median(loads):.2f} s (min {min(loads):.2f}, max {max(loads):.2f}); "
          f"checkpoint {size / 1e9:.2f} GB -> {size / 1e9 / statistics.median(loads):.1f} GB/s end to end")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "cold": args.cold, "bytes": size,
                                         "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
