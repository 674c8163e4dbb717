"""Videos with decord, in a child process: frame times, then sampled frames at a chosen size.

decord and its FFmpeg run in `video_worker`, a child with memory and CPU limits and a timeout, so
a hostile file that makes them abort (SIGABRT from `std::bad_alloc`), spin or log costs one line
and exit 3, not the process. Their stderr is captured by us and never shown raw. Frames come back
through a temporary file, not the pipe.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from kimi_cli.errors import MediaError
from kimi_cli.media.containers import avi_whole_chunks_length, declared_duration

if TYPE_CHECKING:
    import numpy as np

_REENCODE = "re-encode it (that rewrites its index), e.g. ffmpeg -i {name} -c:v libx264 -pix_fmt yuv420p fixed.mp4"
#: How much of each end of the file is searched for an AV1 codec tag (the index may be at the end).
_TAG_SCAN_BYTES = 1 << 20
#: The decoder child's address space: room for decord, FFmpeg and a few large frames.
WORKER_MAX_BYTES = 2 << 30
#: CPU seconds and wall-clock seconds one decoder child may take.
WORKER_CPU_SECONDS = 60
WORKER_TIMEOUT_S = 90.0
#: A clip this much shorter than its container says is reported as cut short.
_SHORT_BY = 0.5


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """A video's first stream: size, frame rate, and when each frame starts."""

    size: tuple[int, int]  # (width, height)
    fps: float
    starts: np.ndarray  # float64 seconds, one per frame, ascending
    duration: float  # seconds, to the end of the last frame
    notes: tuple[str, ...] = ()

    @property
    def n_frames(self) -> int:
        """Number of frames in the stream."""
        return len(self.starts)


def probe_video(path: str, name: str) -> VideoInfo:
    """Read the video's frame times and decode its first frame as a check, in a child process.

    Raises a one-line `MediaError` for a corrupt, truncated, empty, frameless or undecodable file,
    and for one that crashes, exhausts or outlasts the decoder's limits.
    """
    import numpy as np  # imported when used: a client's start skips numpy

    found = _ask_worker({"op": "probe", "path": path}, path, name)
    if found.get("frames", 0) == 0:
        raise MediaError(f"{name}: the video has no frames", "check that the recording finished")
    fps = float(found["fps"])
    times = np.asarray(found["times"], dtype=np.float64).reshape(-1, 2)
    starts, duration = frame_starts(times, fps)
    size = (int(found["size"][0]), int(found["size"][1]))
    notes = _truncation_notes(path, name, duration, fps)
    return VideoInfo(size, fps, starts, duration, notes)


def frame_starts(times: np.ndarray, fps: float) -> tuple[np.ndarray, float]:
    """Frame start times and the clip's length from decord's [start, stop] pairs (pure).

    Timestamps that are missing, negative, non-finite or out of order (an MPEG-2 program stream
    whose first frames carry no time) are replaced by the frame index over the average rate.
    """
    import numpy as np  # imported when used: a client's start skips numpy

    n = len(times)
    starts = times[:, 0] if n else np.zeros(0)
    sane = (
        n > 0
        and bool(np.all(np.isfinite(times)))
        and float(starts.min()) >= -1e-6
        and bool(np.all(np.diff(starts) >= 0))
    )
    if not sane:
        span = _frame_span(fps)
        return np.arange(n, dtype=np.float64) * span, n * span
    last_start, last_stop = float(times[-1, 0]), float(times[-1, 1])
    duration = last_stop if last_stop > last_start else last_start + _frame_span(fps)
    return starts.astype(np.float64), max(duration, 0.0)


def read_frames(
    path: str, name: str, indices: Sequence[int], size: tuple[int, int] | None = None
) -> tuple[list[tuple[int, Image.Image]], list[int]]:
    """Decode frames `indices`, scaled to `size` (width, height) by the decoder when given.

    Returns the decoded (index, RGB image) pairs and the indices that failed to decode (a
    truncated file often has an index that promises more than its data holds). If none decode,
    raises `MediaError`.
    """
    import numpy as np  # imported when used: a client's start skips numpy

    handle, out = tempfile.mkstemp(prefix="kimi-frames-", suffix=".rgb")
    os.close(handle)
    try:
        request = {"op": "read", "path": path, "indices": list(indices), "out": out,
                   "size": list(size) if size else None}
        found = _ask_worker(request, path, name)
        decoded, shape = found["decoded"], found["shape"]
        if not decoded or shape is None:
            raise MediaError(f"{name}: no frame could be decoded (the file is corrupt or truncated)", _hint(name))
        frames = np.fromfile(out, dtype=np.uint8).reshape(len(decoded), *shape)
    finally:
        os.unlink(out)
    pairs = [(int(i), Image.fromarray(frame, "RGB")) for i, frame in zip(decoded, frames, strict=True)]
    return pairs, [int(i) for i in found["failed"]]


def _ask_worker(request: dict[str, object], path: str, name: str) -> dict[str, Any]:
    """Run one request in `python -m kimi_cli.media.video_worker`; failures become `MediaError`."""
    with _whole_chunks(path) as source:
        request = {**request, "path": source, "max_bytes": WORKER_MAX_BYTES, "cpu_seconds": WORKER_CPU_SECONDS}
        return _run_worker(request, path, name)


@contextmanager
def _whole_chunks(path: str) -> Iterator[str]:
    """`path`, or for an AVI cut inside a chunk a temporary copy of its whole chunks only.

    decord reads ahead of the frame it decodes; a partial last chunk failed the first frame at random
    (2 to 14 of 25 opens of one cut MJPEG AVI, more under load), and never once it was dropped.
    """
    length = avi_whole_chunks_length(path)
    if length is None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="kimi-avi-") as tmp:
        copy = os.path.join(tmp, "whole-chunks.avi")
        with open(path, "rb") as src, open(copy, "wb") as dst:
            left = length
            while left > 0 and (block := src.read(min(left, 1 << 20))):
                dst.write(block)
                left -= len(block)
        yield copy


def _run_worker(request: dict[str, object], path: str, name: str) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kimi_cli.media.video_worker"], input=json.dumps(request),
            capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=_worker_env(), check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(
            f"{name}: decoding took longer than {WORKER_TIMEOUT_S:g} s and was stopped", _hint(name)
        ) from None
    reply = _reply(done.stdout)
    if reply is None:
        raise _crashed(name, done.returncode, done.stderr)
    if "error" in reply:
        raise _worker_error(path, name, reply["error"], reply.get("detail", ""))
    return reply["ok"]


def _reply(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


def _worker_env() -> dict[str, str]:
    # The child must import this same copy of the package, wherever it was imported from.
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc reserves 64 MB of address space per arena
    return env


def _crashed(name: str, returncode: int, stderr: str) -> MediaError:
    """A child that died without replying: say why in our words (its stderr is never shown raw)."""
    why = _native_reason(stderr)
    if returncode < 0:
        try:
            died = signal.Signals(-returncode).name
        except ValueError:
            died = f"signal {-returncode}"
        if -returncode == signal.SIGXCPU:
            why = why or f"it used more than {WORKER_CPU_SECONDS} s of CPU time"
        how = f"crashed ({died})"
    else:
        how = f"failed (exit status {returncode})"
    detail = f": {why}" if why else ""
    return MediaError(f"{name}: the video decoder {how} on this file{detail}", _hint(name))


def _native_reason(stderr: str) -> str | None:
    text = stderr.lower()
    if "bad_alloc" in text or "memoryerror" in text or "cannot allocate" in text:
        return (
            f"it needed more than the {WORKER_MAX_BYTES >> 30} GiB allowed "
            "(the file's index is corrupt or claims an impossible number of frames)"
        )
    return None


def _worker_error(path: str, name: str, stage: str, detail: str) -> MediaError:
    if stage == "open":
        return _open_error(path, name, Exception(detail))
    if stage == "memory":
        return MediaError(f"{name}: not enough memory to decode this video", _hint(name))
    return _undecodable(path, name, detail)


def _open_error(path: str, name: str, exc: Exception) -> MediaError:
    text = str(exc)
    if "cannot find video stream" in text:
        if _has_av1_tag(path):
            return MediaError(f"{name}: AV1 video cannot be decoded by decord's FFmpeg", _hint(name))
        return MediaError(
            f"{name}: no video stream could be read (the file may be truncated or corrupt, "
            "hold only audio, or use a codec decord lacks)",
            _hint(name),
        )
    if "filter_graph" in text or "avfilter" in text:
        return MediaError(f"{name}: the video stream has no decodable frames", _hint(name))
    return MediaError(
        f"{name}: the video is corrupt, truncated or empty (the decoder cannot open it)", _hint(name)
    )


def _undecodable(path: str, name: str, detail: str) -> MediaError:
    if "Unable to handle EOF" in detail and _is_mpeg_ts(path):
        # After indexing, decord seeks back to frame 0 by its time stamp. In a short MPEG-TS file
        # whose stream starts late (the muxer's default 1.4 s delay, B-frames: PTS after DTS),
        # FFmpeg's timestamp search lands past the key frame, so the decoder only sees frames
        # whose references are missing and reaches the end with no picture. Remuxing fixes it.
        return MediaError(
            f"{name}: decord cannot seek to the first frame of this short MPEG-TS file",
            f"remux it to MP4 without re-encoding: ffmpeg -i {name} -c copy fixed.mp4",
        )
    if "Unable to handle EOF" in detail:
        reason = "the decoder reached the end of the file before any frame (corrupt or truncated)"
    else:
        reason = "the stream is corrupt or uses a codec feature decord lacks"
    return MediaError(f"{name}: the first frame cannot be decoded; {reason}", _hint(name))


def _is_mpeg_ts(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(189)
    except OSError:
        return False
    return len(head) == 189 and head[0] == 0x47 and head[188] == 0x47


def _hint(name: str) -> str:
    return "play it to check; " + _REENCODE.format(name=name)


def _frame_span(fps: float) -> float:
    return 1.0 / fps if fps > 0 else 0.0


def _has_av1_tag(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(_TAG_SCAN_BYTES)
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAG_SCAN_BYTES))
            tail = handle.read(_TAG_SCAN_BYTES)
    except OSError:
        return False
    # `av01` is the MP4 sample entry, `V_AV1` the Matroska codec id.
    return any(tag in chunk for tag in (b"av01", b"V_AV1") for chunk in (head, tail))


def _truncation_notes(path: str, name: str, duration: float, fps: float) -> tuple[str, ...]:
    found = declared_duration(path)
    if found is None or duration <= 0:
        return ()
    declared, strict = found
    # AVI and Matroska state the video's own length; MP4's may be a longer audio track's.
    slack = 1.5 * _frame_span(fps) + 0.05 if strict else max(_SHORT_BY, 0.1 * declared)
    if duration >= declared - slack:
        return ()
    return (
        f"{name}: the file ends at {math.floor(duration * 10) / 10:.1f} s of {declared:.1f} s "
        "(it is truncated; only the part that is there is used)",
    )
