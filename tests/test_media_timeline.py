"""Time parsing, sampling and timestamps for videos and animations (pure, table-driven)."""

from __future__ import annotations

import pytest

from kimi_cli.errors import EXIT_MEDIA, EXIT_USAGE, MediaError, UsageError
from kimi_cli.media.timeline import (
    TimeRange,
    clamp_range,
    format_timestamp,
    frames_at,
    frames_wanted,
    parse_time_range,
    parse_timestamp,
    sample_times,
    timestamp_decimals,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("1.5", 1.5),
        ("00:10", 10.0),
        ("1:30", 90.0),
        ("01:02:03", 3723.0),
        ("2:00:00.5", 7200.5),
        (" 5 ", 5.0),
        ("100:00", 6000.0),
    ],
)
def test_parse_timestamp(text: str, seconds: float) -> None:
    assert parse_timestamp(text) == seconds


@pytest.mark.parametrize("text", ["", "a", "1:2:3:4", "1:60", "1:60:00", "-5", "1,5", "1:"])
def test_parse_timestamp_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:10-01:30", TimeRange(10, 90)),
        ("90-120", TimeRange(90, 120)),
        ("1:00-", TimeRange(60, None)),
        ("-0:30", TimeRange(0, 30)),
        (" 5 - 7.5 ", TimeRange(5, 7.5)),
    ],
)
def test_parse_time_range(text: str, expected: TimeRange) -> None:
    assert parse_time_range(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("01:30-00:10", "not after the start"),
        ("10-10", "not after the start"),
        ("-", "give a start"),
        ("10", "expected START-END"),
        ("1-2-3", "expected START-END"),
        ("ab-cd", "cannot read 'ab'"),
    ],
)
def test_parse_time_range_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_time_range(text)
    assert fragment in info.value.message
    assert info.value.exit_code == EXIT_USAGE
    assert info.value.hint


@pytest.mark.parametrize(
    ("seconds", "decimals", "text"),
    [
        (0, 0, "00:00:00"),
        (65.9, 0, "00:01:05"),
        (3723, 0, "01:02:03"),
        (1.5, 1, "00:00:01.5"),
        (0.3, 1, "00:00:00.3"),
        (0.04, 2, "00:00:00.04"),
        (-1, 0, "00:00:00"),
        (360000, 0, "100:00:00"),
    ],
)
def test_format_timestamp(seconds: float, decimals: int, text: str) -> None:
    assert format_timestamp(seconds, decimals) == text


@pytest.mark.parametrize(("step", "decimals"), [(1.0, 0), (4.7, 0), (0.5, 1), (0.1, 1), (0.05, 2)])
def test_timestamp_decimals(step: float, decimals: int) -> None:
    assert timestamp_decimals(step) == decimals


@pytest.mark.parametrize(
    ("start", "end", "fps", "cap", "expected"),
    [
        (0, 3, 1, 32, [0, 1, 2]),
        (0, 3.2, 1, 32, [0, 1, 2, 3]),
        (0, 0.2, 1, 32, [0]),  # a short clip still gives one frame
        (10, 12, 2, 32, [10, 10.5, 11, 11.5]),
        (0, 100, 1, 4, [0, 25, 50, 75]),  # capped: evenly spaced instead
        (0, 0, 1, 4, [0]),
    ],
)
def test_sample_times(start: float, end: float, fps: float, cap: int, expected: list[float]) -> None:
    assert sample_times(start, end, fps, cap) == pytest.approx(expected)


def test_frames_wanted() -> None:
    assert frames_wanted(150, 1) == 150
    assert frames_wanted(0, 1) == 1
    assert frames_wanted(2.01, 1) == 3


@pytest.mark.parametrize(
    ("starts", "times", "expected"),
    [
        ([0, 0.1, 0.3, 0.6], [0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.9], [0, 1, 2, 3]),
        ([0, 1, 2], [0.5, 2.5, 10], [0, 2]),
        ([0.5, 1.0], [0.0], [0]),
        ([0, 1 / 3, 2 / 3], [1 / 3], [1]),  # float fuzz does not push a time into the previous frame
    ],
)
def test_frames_at(starts: list[float], times: list[float], expected: list[int]) -> None:
    assert frames_at(starts, times) == expected


def test_clamp_range_whole_and_inside() -> None:
    assert clamp_range("a.mp4", TimeRange(), 30.0) == (0.0, 30.0, None)
    assert clamp_range("a.mp4", TimeRange(5, 10), 30.0) == (5, 10, None)


def test_clamp_range_cuts_a_late_end_with_a_note() -> None:
    start, end, note = clamp_range("a.mp4", TimeRange(5, 100), 30.0)
    assert (start, end) == (5, 30.0)
    assert note is not None and note.startswith("a.mp4: --range ends at 00:01:40")


def test_clamp_range_start_past_the_end() -> None:
    with pytest.raises(MediaError) as info:
        clamp_range("a.mp4", TimeRange(40, None), 30.0)
    assert info.value.exit_code == EXIT_MEDIA
    assert info.value.message.startswith("a.mp4: --range starts at 00:00:40, past the end")
