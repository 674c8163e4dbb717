"""Videos with decord: duration and frame times, then decoding sampled frames at a chosen size.

decord is imported inside the functions that use it. Its bundled FFmpeg writes its own log lines
to the process's stderr (file descriptor 2) no matter what Python does, so those calls run with
descriptor 2 pointed at /dev/null: a bad file gets our one line, not FFmpeg's chatter.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kimi_cli.errors import MediaError

_REENCODE = "re-encode it to H.264, e.g. ffmpeg -i {name} -c:v libx264 -pix_fmt yuv420p fixed.mp4"
#: How much of each end of the file is searched for an AV1 codec tag (the index may be at the end).
_TAG_SCAN_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class VideoInfo:
    """A video's first stream: size, frame rate, and when each frame starts."""

    size: tuple[int, int]  # (width, height)
    fps: float
    starts: np.ndarray  # float64 seconds, one per frame, ascending
    duration: float  # seconds, to the end of the last frame

    @property
    def n_frames(self) -> int:
        """Number of frames in the stream."""
        return len(self.starts)


def probe_video(path: str, name: str) -> VideoInfo:
    """Open the video, read its frame times and decode its first frame as a check.

    Raises a one-line `MediaError` for a corrupt, truncated, empty, frameless or undecodable file.
    """
    reader = _open_reader(path, name)
    n_frames = len(reader)
    if n_frames == 0:
        raise MediaError(f"{name}: the video has no frames", "check that the recording finished")
    with _quiet_native_stderr():
        try:
            first = reader[0].asnumpy()
            times = np.asarray(reader.get_frame_timestamp(list(range(n_frames))), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - decord raises its own and generic errors
            raise _undecodable(name, exc) from None
    fps = float(reader.get_avg_fps() or 0.0)
    starts = times[:, 0]
    duration = float(times[-1, 1]) if times[-1, 1] > times[-1, 0] else float(starts[-1]) + _frame_span(fps)
    if not np.all(np.isfinite(starts)):
        # No usable timestamps: fall back on the average rate.
        starts = np.arange(n_frames, dtype=np.float64) * _frame_span(fps)
        duration = n_frames * _frame_span(fps)
    return VideoInfo((int(first.shape[1]), int(first.shape[0])), fps, starts, max(duration, 0.0))


def read_frames(
    path: str, name: str, indices: Sequence[int], size: tuple[int, int] | None = None
) -> tuple[list[tuple[int, Image.Image]], list[int]]:
    """Decode frames `indices`, scaled to `size` (width, height) by the decoder when given.

    Returns the decoded (index, RGB image) pairs and the indices that failed to decode (a
    truncated file often has an index that promises more than its data holds). If none decode,
    raises `MediaError`.
    """
    width, height = size if size is not None else (-1, -1)
    reader = _open_reader(path, name, width, height)
    with _quiet_native_stderr():
        try:
            batch = reader.get_batch(list(indices)).asnumpy()
            return [(i, Image.fromarray(frame, "RGB")) for i, frame in zip(indices, batch, strict=True)], []
        except Exception:  # noqa: BLE001 - retry one by one to keep the frames that do decode
            pass
        decoded, failed = [], []
        for index in indices:
            try:
                decoded.append((index, Image.fromarray(reader[index].asnumpy(), "RGB")))
            except Exception:  # noqa: BLE001
                failed.append(index)
    if not decoded:
        raise MediaError(f"{name}: no frame could be decoded (the file is corrupt or truncated)", _hint(name))
    return decoded, failed


def _open_reader(path: str, name: str, width: int = -1, height: int = -1) -> object:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    with _quiet_native_stderr():
        try:
            return decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height)
        except Exception as exc:  # noqa: BLE001 - decord raises DECORDError or RuntimeError
            raise _open_error(path, name, exc) from None


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


def _undecodable(name: str, exc: Exception) -> MediaError:
    detail = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__
    return MediaError(f"{name}: the first frame cannot be decoded ({detail})", _hint(name))


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


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (native libraries log there)."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to silence
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
