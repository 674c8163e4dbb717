"""The child side of video decoding: `python -m kimi_cli.media.video_worker`, one request per process.

decord (and the FFmpeg inside it) can abort the whole process on hostile files (an uncaught
`std::bad_alloc` from an index that claims 2^31 frames is SIGABRT). So it runs here, in a child
with an address-space and CPU-time limit; the parent (`video.py`) turns whatever happens, a clean
error or a crash, into one line of its own.

Protocol: a JSON request on stdin, one JSON reply on stdout. Frames go into the file named by the
request as raw uint8 RGB (frame after frame), not through the pipe. Native log lines go to this
process's stderr, which the parent captures and never shows raw. This module imports nothing from
the package, so the child starts fast.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

MAX_THREADS = 4


def _limit(address_space: int, cpu_seconds: int) -> None:
    for which, value in ((resource.RLIMIT_AS, address_space), (resource.RLIMIT_CPU, cpu_seconds)):
        if value <= 0:
            continue
        _soft, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (cap, hard))


def _open(request: dict[str, Any]) -> Any:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    width, height = request.get("size") or (-1, -1)
    try:
        # A few decoder threads: each one's stack and malloc arena counts against the address-space
        # limit, and FFmpeg would start up to 16 on a large machine.
        threads = min(MAX_THREADS, os.cpu_count() or 1)
        return decord.VideoReader(request["path"], ctx=decord.cpu(0), width=width, height=height,
                                  num_threads=threads)
    except Exception as exc:  # noqa: BLE001 - decord raises DECORDError or RuntimeError
        raise _Failure("open", str(exc)) from None


class _Failure(Exception):
    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(detail)
        self.stage = stage
        self.detail = detail


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Frame count, size, average rate and frame times; decodes the first frame as a check."""
    reader = _open(request)
    n_frames = len(reader)
    if n_frames == 0:
        return {"frames": 0}
    try:
        first = reader[0].asnumpy()
        times = reader.get_frame_timestamp(list(range(n_frames)))
    except Exception as exc:  # noqa: BLE001
        raise _Failure("first", str(exc)) from None
    if not _is_rgb(first.shape):
        raise _Failure("first", f"a frame of shape {first.shape}")
    return {
        "frames": n_frames,
        "size": [int(first.shape[1]), int(first.shape[0])],
        "fps": float(reader.get_avg_fps() or 0.0),
        "times": [[float(a), float(b)] for a, b in times.tolist()],
    }


def read(request: dict[str, Any]) -> dict[str, Any]:
    """Decode frames `indices` into the file `out`; a frame that fails is listed, not fatal."""
    reader = _open(request)
    indices = [int(i) for i in request["indices"]]
    decoded: list[int] = []
    failed: list[int] = []
    shape: list[int] | None = None
    with open(request["out"], "wb") as out:
        for index in indices:
            # One at a time: a batch fails as a whole, and memory stays at one frame.
            try:
                frame = reader[index].asnumpy()
            except Exception:  # noqa: BLE001
                failed.append(index)
                continue
            if shape is None and _is_rgb(frame.shape):
                shape = list(frame.shape)
            if list(frame.shape) != shape:  # a corrupt stream can change size or layout midway
                failed.append(index)
                continue
            out.write(frame.tobytes())
            decoded.append(index)
    return {"decoded": decoded, "failed": failed, "shape": shape}


def _is_rgb(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and shape[2] == 3 and shape[0] > 0 and shape[1] > 0


def main() -> int:
    """Serve one request from stdin; the reply is one JSON line on stdout."""
    request = json.loads(sys.stdin.read())
    _limit(int(request.get("max_bytes", 0)), int(request.get("cpu_seconds", 0)))
    handler = probe if request["op"] == "probe" else read
    try:
        reply: dict[str, Any] = {"ok": handler(request)}
    except _Failure as failure:
        reply = {"error": failure.stage, "detail": failure.detail}
    except MemoryError:
        reply = {"error": "memory", "detail": "MemoryError"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown: decord's static destructors have crashed on bad files before.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
