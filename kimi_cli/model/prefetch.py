"""Read a checkpoint's weight files into the page cache while the process imports torch and transformers.

A fresh load spends about 10 s on imports before it reads a weight (benchmarks/NOTES.md, run Q), and
from a cold disk the read then takes 20 s or more for bf16. Reader threads started before the imports
read the shards in the order the stream reads them (sorted names, front to back) into a scratch
buffer, which leaves them in the page cache; the stream then finds what they reached already there.
Each thread reads 8 MiB blocks with `os.preadv`, which lets go of Python's lock for the whole read,
so the imports hand the lock over only once a block. (Streaming the tensors themselves during the imports was
measured and does not overlap: that work needs the lock between every read and copy.)

It starts only where it can pay: on a machine of 4 CPUs or more, when at least a quarter of the
files' pages are not cached (asked of the kernel with `mincore`; where that cannot be asked it does
not start), for at most half the memory the kernel reports available, and it stops when the load's
own stream starts (`end`). Reading is best effort: an error ends that thread quietly and the load
reads the file as it always does. Pure standard library (no torch).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Off switch for benchmarks (the A/B in benchmarks/load_bench.py --no-prefetch).
ENABLED = True
THREADS = 4
BLOCK = 8 << 20
#: Start only when at least this fraction of the files' pages is not in the page cache.
MIN_MISSING = 0.25
#: ... and on a machine with at least this many CPUs: the readers' copies out of the page cache must
#: not take a core from the imports (on a 2-core VM they slowed them by 0.3 s and gained nothing).
MIN_CPUS = 4


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def uncached_fraction(files: Sequence[Path], samples: int = 256) -> float | None:
    """Fraction of the files' pages not in the page cache, estimated from `samples` windows of 16
    pages spread over each file (`mincore` on a mapping of it; no page is read, and a 33 GB checkpoint
    costs milliseconds), or None where the kernel cannot be asked."""
    import ctypes
    import mmap

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        page = os.sysconf("SC_PAGE_SIZE")
        window = 16 * page
        resident = total = 0
        vec = (ctypes.c_ubyte * 16)()
        for f in files:
            size = f.stat().st_size
            if size == 0:
                continue
            stride = max(window, (size // samples) // page * page)
            with f.open("rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as mm:
                base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
                for offset in range(0, size, stride):
                    length = min(window, size - offset)
                    if libc.mincore(ctypes.c_void_p(base + offset), ctypes.c_size_t(length), vec) != 0:
                        return None
                    pages = -(-length // page)
                    resident += pages - bytes(vec)[:pages].count(0)  # bit 0: resident (others reserved)
                    total += pages
        return None if total == 0 else 1.0 - resident / total
    except (OSError, AttributeError, ValueError, TypeError, BufferError):
        return None


def evict(files: Sequence[Path]) -> None:
    """Ask the kernel to drop the files' pages from the page cache (after an fsync: dirty pages are not
    dropped). For benchmarks and tests of a cold load; no root needed."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def available_memory() -> int | None:
    """Bytes the kernel says can be used without swapping (Linux `MemAvailable`), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Prefetch:
    """Reader threads warming `files` (in order, in BLOCK pieces) up to `budget` bytes."""

    def __init__(self, files: Sequence[Path], budget: int, threads: int = THREADS) -> None:
        self.files, self.budget = list(files), budget
        self._blocks = self._plan()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.bytes_read = 0
        self._threads = [threading.Thread(target=self._run, name="kimi-prefetch", daemon=True)
                         for _ in range(threads)]

    def _plan(self) -> Iterator[tuple[Path, int, int]]:
        left = self.budget
        for f in self.files:
            try:
                size = f.stat().st_size
            except OSError:
                continue
            for offset in range(0, size, BLOCK):
                n = min(BLOCK, size - offset, left)
                if n <= 0:
                    return
                yield f, offset, n
                left -= n

    def start(self) -> Prefetch:
        """Start the threads; returns self."""
        for t in self._threads:
            t.start()
        return self

    def _next(self) -> tuple[Path, int, int] | None:
        with self._lock:
            return None if self._stop.is_set() else next(self._blocks, None)

    def _run(self) -> None:
        buf = bytearray(BLOCK)
        fds: dict[Path, int] = {}
        try:
            while (block := self._next()) is not None:
                path, offset, n = block
                if path not in fds:
                    fds[path] = os.open(path, os.O_RDONLY)
                got = os.preadv(fds[path], [memoryview(buf)[:n]], offset)
                with self._lock:
                    self.bytes_read += got
        except (OSError, ValueError, AttributeError):
            pass  # best effort (a platform without preadv, a file gone): the load reads the file itself
        finally:
            for fd in fds.values():
                os.close(fd)

    def join(self, timeout: float | None = None) -> int:
        """Wait for the threads to finish their budget; the bytes they read."""
        for t in self._threads:
            t.join(timeout)
        return self.bytes_read

    def stop(self, timeout: float = 1.0) -> int:
        """Ask the threads to stop after their current block and wait for them; the bytes they read."""
        self._stop.set()
        return self.join(timeout)


def start(model_dir: Path | None) -> Prefetch | None:
    """Start warming the checkpoint at `model_dir` when that pays (module docstring), else None."""
    if not ENABLED or model_dir is None or usable_cpus() < MIN_CPUS:
        return None
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    missing = uncached_fraction(files)
    if missing is None or missing < MIN_MISSING:
        return None
    total = sum(f.stat().st_size for f in files)
    memory = available_memory()
    budget = total if memory is None else min(total, memory // 2)
    return Prefetch(files, budget).start() if budget > 0 else None


#: Per directory, the readers begun for it, or None where `start` declined (asked once, not again
#: by the load inside the app's `warming`); an entry lives until its outermost `warming` ends.
_ACTIVE: dict[Path, Prefetch | None] = {}
_ACTIVE_LOCK = threading.Lock()


def begin(model_dir: Path | None) -> Prefetch | None:
    """`start`, once per directory: a caller that imports torch before the load (the app) begins
    early, and the load's `warming` adopts the same readers (or the same refusal)."""
    if model_dir is None:
        return None
    key = Path(model_dir).resolve()
    with _ACTIVE_LOCK:
        if key not in _ACTIVE:
            _ACTIVE[key] = start(key)
        return _ACTIVE[key]


def end(model_dir: Path | None) -> None:
    """Stop the readers warming `model_dir`, if any: the load's own stream is about to read the files
    with more threads, and two sets of readers at different offsets only slow each other down."""
    if model_dir is None:
        return
    with _ACTIVE_LOCK:
        job = _ACTIVE.get(Path(model_dir).resolve())
    if job is not None:
        job.stop()


@contextmanager
def warming(model_dir: Path | None) -> Iterator[Prefetch | None]:
    """`begin` for the length of the block; the readers are stopped, and the directory forgotten, on
    the way out."""
    key = None if model_dir is None else Path(model_dir).resolve()
    job = begin(key)
    try:
        yield job
    finally:
        if job is not None:
            job.stop()
        if key is not None:
            with _ACTIVE_LOCK:
                _ACTIVE.pop(key, None)
