"""Images through Pillow: formats, EXIF orientation, colour modes, animations and bombs."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from media_fixtures import (
    MediaSet,
    animated_gif,
    exif_rotated_jpeg,
    ffmpeg_exe,
    noise_png,
    png_with_dimensions,
    truncated,
)
from PIL import Image

from kimi_cli.errors import EXIT_MEDIA, MediaError
from kimi_cli.media.image import load_frames, load_still, probe_image, to_rgb


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("image"))


def _still(path: object, name: str) -> Image.Image:
    """The still as the planner will hand it over: probed from its header, decoded at its size."""
    info = probe_image(str(path), name)
    assert not info.animated
    return load_still(str(path), name, info.size)


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return max(abs(a - b) for a, b in zip(pixel, expected, strict=True)) <= tolerance


@pytest.mark.parametrize(
    ("fmt", "suffix", "mode"),
    [
        ("PNG", "png", "RGB"),
        ("JPEG", "jpg", "RGB"),
        ("WEBP", "webp", "RGB"),
        ("BMP", "bmp", "RGB"),
        ("TIFF", "tif", "RGB"),
        ("GIF", "gif", "P"),
        ("TIFF", "tiff", "CMYK"),
        ("PNG", "png", "L"),
    ],
)
def test_common_formats_open_as_rgb(tmp_path, fmt: str, suffix: str, mode: str) -> None:
    path = tmp_path / f"pic.{suffix}"
    Image.new("RGB", (30, 20), (200, 40, 40)).convert(mode).save(path, fmt)
    info = probe_image(str(path), path.name)
    assert not info.animated
    still = _still(path, path.name)
    assert still.mode == "RGB" and still.size == (30, 20)
    assert info.format == fmt


def test_exif_orientation_is_applied(media: MediaSet) -> None:
    path = media.get("turned.jpg", exif_rotated_jpeg)
    info = probe_image(str(path), "turned.jpg")
    assert info.size == (20, 40)
    still = _still(path, "turned.jpg")
    assert still.size == (20, 40)
    # Orientation 6: the stored left (red) half is shown at the top.
    assert _close(still.getpixel((10, 5)), (255, 0, 0), 40)
    assert _close(still.getpixel((10, 35)), (0, 0, 255), 40)


def test_cmyk_jpeg(tmp_path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    still = _still(path, "print.jpg")
    assert _close(still.getpixel((8, 8)), (255, 0, 0))


def test_sixteen_bit_grey_png_keeps_its_tones(tmp_path) -> None:
    path = tmp_path / "deep.png"
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as written:
        assert written.mode.startswith("I")
    still = _still(path, "deep.png")
    row = np.asarray(still)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and 100 < row[32] < 160  # not clipped to white


def test_sixteen_bit_rgb_png_from_ffmpeg(tmp_path) -> None:
    exe = ffmpeg_exe()
    if exe is None:
        pytest.skip("imageio-ffmpeg (test extra) is not installed")
    path = tmp_path / "rgb48.png"
    cmd = [exe, "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=0x3366CC:s=16x16", "-frames:v", "1"]
    subprocess.run([*cmd, "-pix_fmt", "rgb48be", str(path)], check=True)
    still = _still(path, "rgb48.png")
    assert _close(still.getpixel((8, 8)), (0x33, 0x66, 0xCC), 3)


def test_palette_png_with_transparency_goes_on_white(tmp_path) -> None:
    path = tmp_path / "logo.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.paste(1, (0, 0, 4, 8))
    image.save(path, transparency=0)
    still = _still(path, "logo.png")
    assert still.getpixel((1, 1)) == (255, 0, 0)
    assert still.getpixel((6, 6)) == (255, 255, 255)  # transparent black became white


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str) -> None:
    half = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    half.putpixel((0, 0), (0, 0, 0, 255))
    out = to_rgb(half.convert(mode))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"), [("I;16", 65535, 255), ("I", 300, 1), ("F", 0.5, 128)]
)
def test_high_depth_modes(mode: str, value: float, expected: int) -> None:
    out = to_rgb(Image.new(mode, (2, 2), value))
    assert out.getpixel((0, 0)) == (expected,) * 3


def test_animated_gif_timing_and_frames(media: MediaSet) -> None:
    path = str(media.get("anim.gif", animated_gif))
    info = probe_image(path, "anim.gif")
    assert info.animated
    assert info.starts == pytest.approx((0.0, 0.1, 0.3, 0.6))
    assert info.duration == pytest.approx(1.0)
    frames = load_frames(path, "anim.gif", [0, 2, 3])
    assert [f.getpixel((5, 5)) for f in frames] == [(255, 0, 0), (0, 0, 255), (255, 255, 0)]


def test_gif_frames_without_duration_last_100_ms(tmp_path) -> None:
    path = tmp_path / "fast.gif"
    animated_gif(path, (0, 0, 0))
    assert probe_image(str(path), "fast.gif").starts == pytest.approx((0.0, 0.1, 0.2))


def test_single_frame_gif_is_a_still(tmp_path) -> None:
    path = tmp_path / "one.gif"
    Image.new("RGB", (4, 4), (0, 255, 0)).save(path)
    assert not probe_image(str(path), "one.gif").animated


def test_multipage_tiff_reads_the_first_page_with_a_note(tmp_path) -> None:
    path = tmp_path / "scan.tif"
    pages = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    info = probe_image(str(path), "scan.tif")
    assert _still(path, "scan.tif").getpixel((1, 1)) == (255, 0, 0)
    assert info.notes == ("scan.tif: 2 pages in this TIFF; only the first is read",)


def test_truncated_png(media: MediaSet) -> None:
    path = media.get("cut.png", lambda p: truncated(p, noise_png(p.with_name("whole.png"))))
    with pytest.raises(MediaError) as info:
        probe_image(str(path), "cut.png")
    assert info.value.message.startswith("cut.png: the image data is corrupt or truncated")
    assert info.value.exit_code == EXIT_MEDIA


@pytest.mark.parametrize("size", [(100_000, 100_000), (20_000, 10_000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, size: tuple[int, int]) -> None:
    path = png_with_dimensions(tmp_path / "bomb.png", *size)
    with pytest.raises(MediaError) as info:
        probe_image(str(path), "bomb.png")
    assert "178-megapixel safety limit" in info.value.message
    assert "\n" not in info.value.message


def test_bomb_check_does_not_depend_on_pillows_global(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = png_with_dimensions(tmp_path / "bomb.png", 20_000, 10_000)
    with pytest.raises(MediaError, match=r"declares 20000x10000 pixels"):
        probe_image(str(path), "bomb.png")
