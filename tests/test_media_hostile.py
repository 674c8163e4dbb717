"""Every class of hostile file from issue 9 §2, through `make_plan`/`load_plan` as the CLI calls them.

Each case once crashed the process (SIGABRT), hung the planner, blew up memory or was accepted
silently; now each plans, or fails with one line and exit 3, or carries a note naming what is
missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_fixtures import (
    cut,
    flat_png,
    float_tiff,
    gif_frames,
    gif_on_canvas,
    jpeg_claiming,
    libtiff_noise,
    long_clip,
    mpeg2_program,
    short_mpeg_ts,
    stts_bomb,
    tiff_claiming_rows,
)
from media_fixtures import animated_gif, frame_number

from kimi_cli.errors import EXIT_MEDIA, MediaError
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import ImagePart, TextPart
from kimi_cli.plan import load_plan, make_plan

Build = Callable[[Path], Path]

REFUSED: list[tuple[str, str, Build, str]] = [
    ("stts h264", "bomb.mp4", lambda p: stts_bomb(p, "libx264"), "the video decoder crashed (SIGABRT)"),
    ("stts mjpeg", "bomb.mov", lambda p: stts_bomb(p, "mjpeg"), "the video decoder crashed (SIGABRT)"),
    ("stts mpeg4", "bomb4.mp4", lambda p: stts_bomb(p, "mpeg4"), "the video decoder crashed (SIGABRT)"),
    ("gif 400 frames, 8000x8000", "wide.gif", lambda p: gif_on_canvas(p, 400, (8000, 8000)),
     "too much to composite"),
    ("gif 3000 frames, 2000x2000", "many.gif", lambda p: gif_on_canvas(p, 3000, (2000, 2000)),
     "too much to composite"),
    ("jpeg claims 13000x13000", "claims.jpg", lambda p: jpeg_claiming(p, 13000, 13000), "too small to hold"),
    ("jpeg claims 2000x2000", "claims2.jpg", lambda p: jpeg_claiming(p, 2000, 2000),
     "the image data stops at about row"),
    ("tiff claims 65535 rows", "rows.tif", tiff_claiming_rows, "holds only about 120 rows"),
]


@pytest.mark.parametrize(("case", "name", "build", "expected"), REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_file_is_refused_in_one_line(tmp_path, case: str, name: str, build: Build, expected: str) -> None:
    path = build(tmp_path / name)
    with pytest.raises(MediaError) as info:
        make_plan([str(path)])
    error = info.value
    assert error.exit_code == EXIT_MEDIA
    assert error.message.startswith(f"{path}: ") and expected in error.message
    assert "\n" not in error.message and error.hint and "\n" not in error.hint


def test_short_mpeg_ts_gets_a_complete_message_and_a_remux_hint(tmp_path) -> None:
    path = short_mpeg_ts(tmp_path / "clip.ts")
    with pytest.raises(MediaError) as info:
        make_plan([str(path)])
    assert info.value.message == f"{path}: decord cannot seek to the first frame of this short MPEG-TS file"
    assert info.value.hint is not None and "-c copy" in info.value.hint  # no re-encode to the same codec


def test_tall_gif_canvas_plans_quickly(tmp_path) -> None:
    path = gif_on_canvas(tmp_path / "tall.gif", 400, (1, 65535))
    (item,) = make_plan([str(path)]).inputs
    assert item.source.kind == "animation" and item.images


@pytest.mark.parametrize(
    ("name", "build"),
    [
        pytest.param("deep.png", lambda p: flat_png(p, 13000, 13000), marks=pytest.mark.slow),
        ("small-deep.png", lambda p: flat_png(p, 3000, 2000)),
        ("float.tif", lambda p: float_tiff(p, 2000)),
    ],
)
def test_huge_high_depth_stills_load_at_the_planned_size(tmp_path, name: str, build: Build) -> None:
    path = build(tmp_path / name)
    plan = make_plan([str(path)])
    (image,) = plan.inputs[0].images
    (item,) = load_plan(plan)
    (part,) = [p for p in item.parts if isinstance(p, ImagePart)]
    assert part.image.size == image.target.size == image.geometry.resized
    assert part.image.mode == "RGB" and part.image.getpixel((3, 3)) != (255, 255, 255)


@pytest.mark.parametrize(
    ("name", "build", "expected"),
    [
        ("cut.avi", lambda p: cut(p, long_clip("mjpeg"), 0.6), "the file ends at 2."),
        ("cut.webm", lambda p: cut(p, long_clip("libvpx-vp9"), 0.7), "of 5.6 s (it is truncated"),
        ("cut.gif", lambda p: cut(p, gif_frames, 0.3), "the file is cut off after frame"),
    ],
)
def test_truncated_clip_plans_with_a_note_naming_what_is_missing(
    tmp_path, name: str, build: Build, expected: str
) -> None:
    path = build(tmp_path / name)
    plan = make_plan([str(path)])
    assert any(expected in note and note.startswith(str(path)) for note in plan.notes), plan.notes


def test_whole_clips_get_no_truncation_note(tmp_path) -> None:
    paths = [long_clip("mjpeg")(tmp_path / "whole.avi"), gif_frames(tmp_path / "whole.gif")]
    assert make_plan([str(p) for p in paths]).notes == ()


def _labels(plan_inputs) -> list[str]:
    return [image.label for item in plan_inputs for image in item.images]


def test_mpeg2_frames_get_distinct_times_and_the_right_pictures(tmp_path) -> None:
    path = mpeg2_program(tmp_path / "clip.mpg")
    plan = make_plan([str(path)], MediaOptions(fps=10))
    assert _labels(plan.inputs) == ["[00:00:00.0]", "[00:00:00.1]", "[00:00:00.2]"]
    (item,) = load_plan(plan)
    assert [frame_number(p.image) for p in item.parts if isinstance(p, ImagePart)] == [0, 1, 2]


def test_short_gif_frames_never_share_a_label(tmp_path) -> None:
    path = animated_gif(tmp_path / "slow.gif", (600, 600, 600))
    labels = _labels(make_plan([str(path)]).inputs)
    assert labels == ["[00:00:00.0]", "[00:00:00.6]"]


def test_libtiff_writes_nothing_to_stderr(tmp_path, capfd) -> None:
    path = libtiff_noise(tmp_path / "tagged.tif")
    (item,) = load_plan(make_plan([str(path)]))
    assert any(isinstance(p, ImagePart) for p in item.parts)
    assert capfd.readouterr().err == ""


def test_video_frames_come_back_through_the_child(tmp_path) -> None:
    path = long_clip("libx264", 3.0)(tmp_path / "ok.mp4")
    (item,) = load_plan(make_plan([str(path)], MediaOptions(fps=2)))
    labels = [p.text for p in item.parts if isinstance(p, TextPart)]
    frames = [frame_number(p.image) for p in item.parts if isinstance(p, ImagePart)]
    assert labels[:3] == ["[00:00:00.0]", "[00:00:00.5]", "[00:00:01.0]"]
    assert frames[:3] == [0, 5, 10]
