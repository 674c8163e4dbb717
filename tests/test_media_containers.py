"""Header-only readers: a container's declared length, a GIF's layout, decord's frame times (pure)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hostile_fixtures import gif_frames, gif_on_canvas, long_clip

from kimi_cli.media.containers import declared_duration, parse_declared_duration
from kimi_cli.media.gif import GifFormatError, parse_layout, read_layout
from kimi_cli.media.timeline import distinct_labels
from kimi_cli.media.video import frame_starts


def _avi(frames: int, usec: int) -> bytes:
    avih = b"avih" + struct.pack("<I", 56) + struct.pack("<5I", usec, 0, 0, 0, frames) + bytes(36)
    return b"RIFF" + bytes(4) + b"AVI " + b"LIST" + bytes(8) + avih


def _mvhd(version: int, timescale: int, duration: int) -> bytes:
    if version == 1:
        body = bytes([1, 0, 0, 0]) + bytes(16) + struct.pack(">IQ", timescale, duration)
    else:
        body = bytes(4) + bytes(8) + struct.pack(">II", timescale, duration)
    return bytes(4) + b"ftypisom" + bytes(8) + b"mvhd" + body + bytes(80)


def _mkv(seconds_ms: float) -> bytes:
    return b"\x1a\x45\xdf\xa3" + bytes(20) + b"\x2a\xd7\xb1\x83\x0f\x42\x40" + b"\x44\x89\x88" + struct.pack(
        ">d", seconds_ms
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_avi(56, 100_000), (5.6, True)),
        (_avi(0, 100_000), None),
        (_mkv(5600.0), (5.6, True)),
        (_mvhd(0, 1000, 3000), (3.0, False)),
        (_mvhd(1, 90000, 270000), (3.0, False)),
        (_mvhd(0, 0, 3000), None),
        (b"\x47" + bytes(400), None),
        (b"", None),
    ],
)
def test_declared_duration_from_header_bytes(data: bytes, expected) -> None:
    found = parse_declared_duration(data)
    assert found == (pytest.approx(expected[0]), expected[1]) if expected else found is None


def test_declared_duration_of_real_files(tmp_path) -> None:
    avi = long_clip("mjpeg", 2.0)(tmp_path / "a.avi")
    webm = long_clip("libvpx-vp9", 2.0)(tmp_path / "a.webm")
    assert declared_duration(str(avi)) == (pytest.approx(2.0), True)
    assert declared_duration(str(webm)) == (pytest.approx(2.0, abs=0.05), True)


def test_gif_layout_reads_frames_without_decoding(tmp_path) -> None:
    layout = read_layout(str(gif_on_canvas(tmp_path / "big.gif", 50, (8000, 8000))))
    assert layout.canvas == (8000, 8000) and len(layout.frames) == 50 and layout.complete
    assert {f.delay_ms for f in layout.frames} == {50}


def test_gif_layout_of_a_cut_file_is_incomplete(tmp_path) -> None:
    data = gif_frames(tmp_path / "g.gif").read_bytes()
    whole, part = parse_layout(data), parse_layout(data[: len(data) // 3])
    assert len(whole.frames) == 15 and whole.complete
    assert 0 < len(part.frames) < 15 and not part.complete


def test_gif_extent_grows_with_frames_past_the_canvas() -> None:
    frame = b"\x2c" + struct.pack("<HHHHB", 10, 20, 300, 400, 0) + b"\x02\x01\x00\x00"
    data = b"GIF89a" + struct.pack("<HHBBB", 1, 65535, 0, 0, 0) + frame + b"\x3b"
    layout = parse_layout(data)
    assert layout.extent == (310, 65535) and layout.complete


def test_not_a_gif() -> None:
    with pytest.raises(GifFormatError):
        parse_layout(b"PNG")


@pytest.mark.parametrize(
    ("starts", "decimals", "expected"),
    [
        ([0.0, 1.0, 2.0], 0, ["00:00:00", "00:00:01", "00:00:02"]),
        ([0.0, 0.6], 0, ["00:00:00.0", "00:00:00.6"]),
        ([0.0, 0.04, 0.08], 1, ["00:00:00.00", "00:00:00.04", "00:00:00.08"]),
        ([0.0, 0.0, 1.0], 0, ["00:00:00.000", None, "00:00:01.000"]),
    ],
)
def test_distinct_labels(starts, decimals, expected) -> None:
    assert distinct_labels(starts, decimals) == expected


@pytest.mark.parametrize(
    ("times", "expected_starts", "expected_duration"),
    [
        ([[0.0, 0.1], [0.1, 0.2]], [0.0, 0.1], 0.2),
        ([[-1.02e14, -1.02e14], [-1.02e14, -1.02e14], [0.0, 0.1]], [0.0, 0.1, 0.2], 0.3),
        ([[0.0, 0.1], [float("nan"), 0.2]], [0.0, 0.1], 0.2),
        ([[0.2, 0.3], [0.1, 0.2]], [0.0, 0.1], 0.2),
        ([[0.0, 0.0], [0.5, 0.5]], [0.0, 0.5], 0.6),
    ],
)
def test_frame_starts_replace_unusable_times(times, expected_starts, expected_duration) -> None:
    starts, duration = frame_starts(np.asarray(times, dtype=np.float64), 10.0)
    assert starts.tolist() == pytest.approx(expected_starts)
    assert duration == pytest.approx(expected_duration)


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", "png"), ("WEBP", "webp")])
def test_animated_png_and_webp_durations_come_from_their_chunks(tmp_path, fmt: str, suffix: str) -> None:
    from PIL import Image

    from kimi_cli.media.animation import frame_delays
    from kimi_cli.media.image import probe_image

    path = tmp_path / f"anim.{suffix}"
    frames = [Image.new("RGB", (16, 12), (80 * i, 0, 0)) for i in range(3)]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=[40, 80, 120])
    assert frame_delays(path.read_bytes()) == [40, 80, 120]
    info = probe_image(str(path), path.name)  # WebP once gave 100 ms for every frame
    assert info.animated and info.starts == pytest.approx((0.0, 0.04, 0.12))
    assert info.duration == pytest.approx(0.24)


def test_frame_delays_of_other_bytes() -> None:
    from kimi_cli.media.animation import frame_delays

    assert frame_delays(b"GIF89a") is None
    assert frame_delays(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82") is None


def test_a_cut_avi_keeps_only_its_whole_chunks(tmp_path):
    import struct

    from hostile_fixtures import cut, long_clip

    from kimi_cli.media.containers import avi_whole_chunks_length

    whole = long_clip("mjpeg")(tmp_path / "whole.avi")
    assert avi_whole_chunks_length(str(whole)) is None  # an intact file is left alone
    short = cut(tmp_path / "cut.avi", long_clip("mjpeg"), 0.6)
    data = short.read_bytes()
    length = avi_whole_chunks_length(str(short))
    assert length is not None and data.find(b"movi") < length < len(data)
    # The cut falls on a chunk boundary: the next chunk's header announces more than the file holds.
    next_size = struct.unpack("<I", data[length + 4:length + 8])[0]
    assert data[length:length + 2].isdigit() and length + 8 + next_size > len(data)
    assert avi_whole_chunks_length(str(tmp_path / "missing.avi")) is None


@pytest.mark.slow
def test_a_cut_avi_probes_the_same_every_time(tmp_path):
    """decord's read-ahead into a partial last chunk failed the first frame at random (up to 14 in 25)."""
    from hostile_fixtures import cut, long_clip

    from kimi_cli.media.video import probe_video

    short = cut(tmp_path / "cut.avi", long_clip("mjpeg"), 0.6)
    durations = {round(probe_video(str(short), "cut.avi").duration, 3) for _ in range(12)}
    assert len(durations) == 1
