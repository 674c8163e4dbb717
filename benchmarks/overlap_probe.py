"""Can the weights stream while transformers imports? One fresh process per mode (CUDA).

    PYTHONPATH=. python benchmarks/overlap_probe.py --model DIR [--modes import,stream,both]

`import`: only the model class's import (after torch). `stream`: only CUDA start-up and the checkpoint
streamed (`model.stream`) into one preallocated device buffer, a copy per tensor as the loader does.
`both`: the import on a thread while the main thread streams. If Python's lock kept them apart,
`both` would take the sum; if the stream's reads and copies run without it, the larger of the two.
`both-switch`: the same with `sys.setswitchinterval(1e-4)` (the import thread hands the lock over
every 0.1 ms instead of 5 ms, so the stream waits less for it each time it needs it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, threading, time
from pathlib import Path
t0 = time.perf_counter()
import torch
out = {"torch_s": time.perf_counter() - t0}
mode, model = sys.argv[1], Path(sys.argv[2])

def imp():
    s = time.perf_counter()
    import transformers.models.kimi_k25.modeling_kimi_k25  # noqa: F401
    out["import_s"] = time.perf_counter() - s

def stream():
    s = time.perf_counter()
    torch.empty(1, device="cuda")
    out["cuda_s"] = time.perf_counter() - s
    from kimi_cli.model.stream import stream_shards
    shards = sorted(model.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in shards)
    dest = torch.empty(total, dtype=torch.uint8, device="cuda")
    s, at = time.perf_counter(), 0
    with torch.no_grad():
        for name, t in stream_shards([(p, None) for p in shards], "cuda"):
            n = t.numel() * t.element_size()
            dest[at:at + n].copy_(t.reshape(-1).view(torch.uint8))
            at += n
    torch.cuda.synchronize()
    out["stream_s"], out["bytes"] = time.perf_counter() - s, at

s = time.perf_counter()
if mode == "import":
    imp()
elif mode == "stream":
    stream()
else:
    if mode == "both-switch":
        sys.setswitchinterval(1e-4)
    th = threading.Thread(target=imp)
    th.start()
    stream()
    th.join()
out["after_torch_s"] = time.perf_counter() - s
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--modes", default="import,stream,both,both-switch")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for _ in range(args.repeats):
        for mode in args.modes.split(","):
            proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.model)], capture_output=True,
                                  text=True, env=env, check=False)
            line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else proc.stderr[-2000:]
            print(mode, line, flush=True)


if __name__ == "__main__":
    main()
