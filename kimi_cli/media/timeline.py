"""Time arithmetic for videos and animations: parsing `--range`, sampling times, timestamps (pure).

Shared by `video.py` (decord) and `image.py` (animated GIF/WebP/PNG), so both sample frames the
same way and label them with the same `[00:01:05]` text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kimi_cli.errors import MediaError, UsageError

_TIME = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?)$")
RANGE_EXAMPLE = (
    "e.g. --range 00:10-01:30, --range 90-120 or --range 1:00- (start and end as [HH:]MM:SS or seconds)"
)


@dataclass(frozen=True)
class TimeRange:
    """A span of a video in seconds; `end` None means "to the end"."""

    start: float = 0.0
    end: float | None = None


def parse_timestamp(text: str) -> float:
    """Seconds from `SS[.f]`, `MM:SS[.f]` or `HH:MM:SS[.f]`; `ValueError` for anything else."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"cannot read {text.strip()!r} as a time")
    hours, minutes, seconds = match.groups()
    value = float(seconds)
    if minutes is not None:
        if value >= 60:
            raise ValueError(f"{text.strip()!r}: seconds must be below 60 after minutes")
        if hours is not None and int(minutes) >= 60:
            raise ValueError(f"{text.strip()!r}: minutes must be below 60 after hours")
        value += int(minutes) * 60 + int(hours or 0) * 3600
    return value


def parse_time_range(text: str) -> TimeRange:
    """Parse a `--range` value such as `00:10-01:30`, `90-120`, `1:00-` or `-0:30` (pure).

    Raises `UsageError` (exit 2) for garbage, an empty range, or an end before the start.
    """
    spec = text.strip()
    if spec.count("-") != 1:
        raise UsageError(f"--range {text!r}: expected START-END", RANGE_EXAMPLE)
    first, last = (part.strip() for part in spec.split("-"))
    if not first and not last:
        raise UsageError(f"--range {text!r}: give a start, an end or both", RANGE_EXAMPLE)
    try:
        start = parse_timestamp(first) if first else 0.0
        end = parse_timestamp(last) if last else None
    except ValueError as exc:
        raise UsageError(f"--range {text!r}: {exc}", RANGE_EXAMPLE) from None
    if end is not None and end <= start:
        raise UsageError(
            f"--range {text!r}: the end ({format_timestamp(end)}) is not after the start ({format_timestamp(start)})",
            "write the earlier time first, e.g. --range 00:10-01:30",
        )
    return TimeRange(start, end)


def format_timestamp(seconds: float, decimals: int = 0) -> str:
    """`HH:MM:SS`, with `decimals` digits of fractional seconds when asked (`00:00:01.5`)."""
    scale = 10**decimals
    # Truncate like a timecode does: a frame at 64.9 s is shown in second 64.
    ticks = math.floor(max(seconds, 0.0) * scale + 1e-6)
    whole, fraction = divmod(ticks, scale)
    hours, rest = divmod(whole, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{text}.{fraction:0{decimals}d}" if decimals else text


def timestamp_decimals(step: float) -> int:
    """Fraction digits needed so that frames `step` seconds apart get distinct labels."""
    if step >= 1.0:
        return 0
    return 1 if step >= 0.1 else 2


def distinct_labels(starts: Sequence[float], decimals: int, most: int = 3) -> list[str | None]:
    """Timestamp labels for frames starting at `starts` (ascending), each shown once (pure).

    Fraction digits are added (up to `most`) until neighbours differ; a frame whose label still
    repeats the previous one (the same start time) gets None, i.e. is dropped.
    """
    while decimals < most:
        texts = [format_timestamp(t, decimals) for t in starts]
        if len(set(texts)) == len(texts):
            return list(texts)
        decimals += 1
    labels: list[str | None] = []
    previous = None
    for t in starts:
        text = format_timestamp(t, decimals)
        labels.append(None if text == previous else text)
        previous = text
    return labels


def frames_wanted(span: float, fps: float) -> int:
    """Frames that sampling `span` seconds at `fps` gives, at least one."""
    return max(1, math.ceil(max(span, 0.0) * fps - 1e-9))


def sample_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """Times to sample in [start, end): every 1/fps seconds, or `max_frames` evenly if that is more.

    Always at least one time (a still or a very short clip still gives its first frame).
    """
    span = max(end - start, 0.0)
    wanted = frames_wanted(span, fps)
    if wanted <= max_frames:
        return [start + k / fps for k in range(wanted)]
    step = span / max_frames
    return [start + k * step for k in range(max_frames)]


def frames_at(starts: Sequence[float], times: Sequence[float]) -> list[int]:
    """Indices of the frames showing at each time (frame i shows from starts[i]); duplicates dropped.

    `starts` must be sorted; a time before the first frame maps to frame 0.
    """
    indices: list[int] = []
    lo = 0
    for t in times:
        # Times are increasing, so the search can resume where the last one ended.
        while lo + 1 < len(starts) and starts[lo + 1] <= t + 1e-6:
            lo += 1
        if not indices or indices[-1] != lo:
            indices.append(lo)
    return indices


def clamp_range(name: str, wanted: TimeRange, duration: float) -> tuple[float, float, str | None]:
    """The [start, end) to sample from a `duration`-second clip, and a note if the end was cut.

    A start at or past the end raises `MediaError` naming the file (exit 3).
    """
    if wanted.start >= duration:
        raise MediaError(
            f"{name}: --range starts at {format_timestamp(wanted.start)}, past the end of the clip "
            f"({format_timestamp(duration, 1)} long)",
            f"pick a start before {format_timestamp(duration, 1)}",
        )
    if wanted.end is None or wanted.end <= duration:
        return wanted.start, wanted.end if wanted.end is not None else duration, None
    note = (
        f"{name}: --range ends at {format_timestamp(wanted.end)} but the clip is "
        f"{format_timestamp(duration, 1)} long; sampled to its end"
    )
    return wanted.start, duration, note
