"""Safetensors shards onto a device in large sequential reads: the quantized loader's fast path.

Reading a tensor at a time (`safe_open(...).get_tensor`, then a copy to the GPU) costs a host copy, a
pageable transfer and a synchronisation per tensor; the checkpoint has about 5,700 of them (a
`kimi quantize`d one about 15,000). Here each shard's wanted tensors are grouped, in file order, into
chunks of about `CHUNK_BYTES`; each chunk is read by a few threads straight into a pinned host buffer
(`preadv`: one copy out of the page cache), sent to a device staging buffer asynchronously, and its
tensors are handed out as views of that buffer. Two buffers alternate and the next chunk is read
while the caller uses this one, across shard boundaries too, so reading never waits for the
transfer or the caller. On a CPU the chunk is read into plain memory and the views are used directly.

The header is parsed as untrusted input by `model.validate` (the same checks every load runs): offsets
outside the file or sizes that do not match the dtype and shape are one `ModelLoadError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.validate import memoized, read_safetensors_header
from kimi_cli.textsafe import json_loads

CHUNK_BYTES = 256 << 20
#: Parallel preads per chunk: enough to keep an NVMe queue busy and to copy out of the page cache on
#: several cores at once.
READ_THREADS = 8 if (os.cpu_count() or 1) >= 8 else 4
#: A gap of unwanted bytes larger than this between two wanted tensors starts a new chunk.
MAX_GAP = 4 << 20

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
          "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass(frozen=True)
class Entry:
    """One tensor of a shard: its name, dtype, shape and absolute byte range in the file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> list[Entry]:
    """The shard's tensors in file order, each checked against the file (`model.validate`'s checks,
    parsed once a load there)."""
    header, base, _ = read_safetensors_header(path)
    out = []
    for name, info in header.items():
        if info["dtype"] not in DTYPES:
            raise ModelLoadError(f"{path}: tensor {name[:80]!r} has dtype {info['dtype']}, which no Kimi-VL "
                                 "checkpoint uses", hint="the file is not a Kimi-VL checkpoint")
        begin, end = info["data_offsets"]
        out.append(Entry(name, DTYPES[info["dtype"]], tuple(info["shape"]), base + begin, base + end))
    return sorted(out, key=lambda e: e.begin)


def weight_map(model_dir: Path) -> dict[str, str]:
    """Official tensor name -> shard file name: from `model.safetensors.index.json` when there is one
    (as transformers reads it), else from every shard's header. The index is untrusted input: it must
    map names to plain file names of shards in the directory."""
    index = model_dir / "model.safetensors.index.json"
    if not index.is_file():
        return {e.name: shard.name for shard in sorted(model_dir.glob("*.safetensors")) for e in read_header(shard)}
    return dict(memoized("safetensors index", index, lambda: _read_index(model_dir, index)))


def _read_index(model_dir: Path, index: Path) -> dict[str, str]:
    try:
        found = json_loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        found = None
    ok = isinstance(found, dict) and all(
        isinstance(k, str) and isinstance(v, str) and "/" not in v and "\\" not in v and v.endswith(".safetensors")
        for k, v in found.items())
    # each shard once (the index names it for thousands of tensors)
    ok = ok and all((model_dir / v).is_file() for v in set(found.values()))
    if not ok:
        raise ModelLoadError(f"{index}: not a valid safetensors index (a weight_map of tensor names to the "
                             "directory's shard files)", hint="re-download the model")
    return dict(found)


def chunks(entries: Iterable[Entry], limit: int = CHUNK_BYTES, gap: int = MAX_GAP) -> list[list[Entry]]:
    """Consecutive runs of entries (file order) spanning at most `limit` bytes (a larger tensor alone)."""
    out: list[list[Entry]] = []
    for e in entries:
        last = out[-1] if out else None
        if last and e.begin - last[-1].end <= gap and e.end - last[0].begin <= limit:
            last.append(e)
        else:
            out.append([e])
    return out


def _start_read(fd: int, buf: memoryview, offset: int, pool: ThreadPoolExecutor, path: Path) -> list[Future[None]]:
    """Start filling `buf` from the file at `offset`, in READ_THREADS parallel preads."""
    n = len(buf)
    step = max(-(-n // READ_THREADS), 1 << 20)

    def part(start: int) -> None:
        view, pos = buf[start:min(start + step, n)], offset + start
        while view:
            got = os.preadv(fd, [view], pos)
            if got <= 0:
                raise ModelLoadError(f"{path}: ends at byte {pos}, inside a tensor",
                                     hint="the file is truncated (or changed while loading); re-download it")
            view, pos = view[got:], pos + got

    return [pool.submit(part, start) for start in range(0, n, step)]


class _Buffer:
    """A host buffer (pinned for a GPU) and, for a GPU, its device twin, growable."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.host, self.dev, self.sent = device, None, None, None

    def ensure(self, n: int) -> None:
        """At least `n` bytes, and the host side free (its last transfer to the device has left it)."""
        if self.sent is not None:
            self.sent.synchronize()
        if self.host is None or self.host.numel() < n:
            cuda = self.device.type == "cuda"
            self.host = torch.empty(n, dtype=torch.uint8, pin_memory=cuda)
            self.dev = torch.empty(n, dtype=torch.uint8, device=self.device) if cuda else self.host


@dataclass(frozen=True)
class _Run:
    """A chunk to read: consecutive entries of one shard."""

    path: Path
    entries: list[Entry]

    @property
    def size(self) -> int:
        return self.entries[-1].end - self.entries[0].begin


def _plan(shards: Sequence[tuple[Path, set[str] | None]], limit: int | None) -> list[_Run]:
    picked = [(p, [e for e in read_header(p) if wanted is None or e.name in wanted]) for p, wanted in shards]
    largest = max((e.end - e.begin for _, es in picked for e in es), default=0)
    limit = max(limit or CHUNK_BYTES, largest)
    return [_Run(p, run) for p, es in picked for run in chunks(es, limit)]


def stream_shards(shards: Sequence[tuple[Path, set[str] | None]], device: Any,
                  limit: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor on `device`) for each shard's wanted tensors (None: all), shard after shard in
    file order, as one pipeline: while the caller uses one chunk's tensors the next chunk is being read
    (and, on a GPU, the one before is in flight), across shard boundaries too. A tensor is a view of a
    staging buffer, valid until the caller asks for a tensor of the next chunk; work queued on the
    device's current stream before then is ordered before the buffer is reused."""
    device = torch.device(device)
    runs = _plan(shards, limit)
    if not runs:
        return
    buffers = [_Buffer(device), _Buffer(device)]
    fds: dict[Path, int] = {}
    try:
        for run in runs:
            if run.path not in fds:
                fds[run.path] = os.open(run.path, os.O_RDONLY)
        with ThreadPoolExecutor(READ_THREADS) as pool:

            def start(i: int) -> list[Future[None]]:
                run, buf = runs[i], buffers[i % 2]
                buf.ensure(run.size)
                view = memoryview(buf.host.numpy())[:run.size]
                return _start_read(fds[run.path], view, run.entries[0].begin, pool, run.path)

            pending = start(0)
            for i, run in enumerate(runs):
                for done in pending:
                    done.result()
                buf, n = buffers[i % 2], run.size
                if device.type == "cuda":
                    buf.dev[:n].copy_(buf.host[:n], non_blocking=True)
                    buf.sent = torch.cuda.Event()
                    buf.sent.record()
                if i + 1 < len(runs):
                    pending = start(i + 1)
                yield from _views(buf, run)
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
    finally:
        for fd in fds.values():
            os.close(fd)


def _views(buf: _Buffer, run: _Run) -> Iterator[tuple[str, torch.Tensor]]:
    base = run.entries[0].begin
    for e in run.entries:
        raw = buf.dev[e.begin - base:e.end - base]
        if (e.begin - base) % e.dtype.itemsize:  # safetensors does not promise alignment
            raw = raw.clone()
        yield e.name, raw.view(e.dtype).view(e.shape)


def stream_tensors(path: Path, wanted: set[str] | None, device: Any,
                   limit: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor on `device`) for one shard's wanted tensors (None: all), in file order."""
    return stream_shards([(path, wanted)], device, limit)
