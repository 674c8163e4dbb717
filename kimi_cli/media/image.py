"""Open images with Pillow: planned from headers, decoded one at a time at the size they are used.

Planning reads only what a file declares (size, EXIF orientation, frame layout) plus a cheap
check that the data is there; `load_still` decodes later, straight at the planned size (JPEG
draft mode), upright, RGB on white. Bombs are refused. An animated GIF, PNG or WebP is an
animation: its frames are sampled like a video's, with timestamps from the frames' own durations.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageOps

from kimi_cli.errors import MediaError
from kimi_cli.media import animation, gif
from kimi_cli.media.integrity import check_consistent, check_jpeg_rows, strips_in_file
from kimi_cli.media.quiet import native_stderr_captured

#: Refuse images above this many pixels before decoding. Pillow warns at 89 MP and fails at twice
#: that; we allow up to its hard limit so that 100-megapixel camera photos still open.
MAX_PIXELS = 2 * 89_478_485
#: Compositing an animation touches its whole canvas once per frame up to the last one used;
#: beyond this many pixels in all (about 5 s of Pillow's work on one core) it is refused.
MAX_COMPOSITE_PIXELS = 4_000_000_000
#: Browsers show GIF frames that declare 0-10 ms for 100 ms; do the same so timestamps match.
DEFAULT_FRAME_MS = 100
_ANIMATED_FORMATS = {"GIF", "PNG", "WEBP"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
#: EXIF orientations 5-8 turn the picture a quarter, swapping width and height.
_QUARTER_TURNS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    """An image as its header describes it: a still, or the timing of an animation's frames."""

    format: str
    size: tuple[int, int]  # (width, height), upright
    animated: bool = False
    starts: tuple[float, ...] = (0.0,)  # frame start times in seconds
    duration: float = 0.0  # seconds, 0 for a still
    notes: tuple[str, ...] = ()
    canvas_pixels: int = 0  # an animation's composited canvas, for `check_composite`


def probe_image(path: str, name: str) -> ImageInfo:
    """Read `path`'s header (and check its data is there) without keeping any pixels.

    Raises a one-line `MediaError` for a decompression bomb, corrupt or truncated data, or a
    header that claims more than the file holds.
    """
    with _opened(path, name) as image:
        fmt = image.format or "image"
        if fmt == "GIF":
            layout = _gif_layout(path, name)
            if len(layout.frames) > 1:
                return _gif_info(layout, name)
        frames = getattr(image, "n_frames", 1) if fmt != "GIF" else 1
        if frames > 1 and fmt in _ANIMATED_FORMATS:
            return _animation_info(image, fmt, frames, name, path)
        size = _upright_size(image)
        check_consistent(image, path, name)
        _verify_data(image, path, name)
        notes = (f"{name}: {frames} pages in this {fmt}; only the first is read",) if frames > 1 else ()
        return ImageInfo(fmt, size, notes=notes + _native_notes(image, name))


def load_still(path: str, name: str, size: tuple[int, int]) -> Image.Image:
    """Decode the still at `path` as an upright RGB image of exactly `size` (width, height).

    JPEGs are decoded at the smallest scale still at least `size` (draft mode); other formats
    are reduced right after decoding, so only one full-size picture is ever in memory.
    """
    with _opened(path, name) as image:
        if image.format == "JPEG":
            turned = _orientation(image) in _QUARTER_TURNS
            want = (size[1], size[0]) if turned else size
            image.draft("RGB", want)
        with native_stderr_captured():
            image.load()
        return fit(_upright(image), size)


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """RGB at exactly `size`: shrunk in the image's own mode first (no full-size copies)."""
    if image.size != size and image.mode not in ("P", "1"):
        factor = min(image.width // size[0], image.height // size[1])
        if factor >= 2 and not image.mode.startswith("I;16"):  # Pillow cannot reduce 16-bit grey
            image = image.reduce(factor)
        image = image.resize(size, Image.Resampling.BICUBIC)
        return to_rgb(image)
    image = to_rgb(image)
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def load_frames(path: str, name: str, indices: Sequence[int], size: tuple[int, int] | None = None
                ) -> list[Image.Image]:
    """Decode the animation frames at `indices` (ascending) as RGB images, resized to `size`."""
    frames: list[Image.Image] = []
    with _opened(path, name) as image, native_stderr_captured():
        for index in indices:
            # Seeking forward replays disposal, so each frame comes out fully composed.
            image.seek(index)
            frame = to_rgb(image)
            frames.append(frame if size is None or frame.size == size else frame.resize(size, Image.Resampling.BICUBIC))
    return frames


def check_composite(name: str, info: ImageInfo, last_index: int) -> None:
    """Refuse an animation whose frames up to `last_index` cost too much to composite."""
    work = (last_index + 1) * info.canvas_pixels
    if work > MAX_COMPOSITE_PIXELS:
        raise MediaError(
            f"{name}: {last_index + 1} frames on the {info.size[0]}x{info.size[1]} canvas are too much "
            f"to composite ({work / 1e9:,.0f} gigapixels; the limit is {MAX_COMPOSITE_PIXELS / 1e9:g})",
            f"use fewer frames (--max-frames, --range) or convert it to a video: ffmpeg -i {name} clip.mp4",
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy: alpha composited on white, palette/CMYK/16-bit/float converted.

    ICC profiles are not applied; CMYK uses Pillow's plain conversion.
    """
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_gray(image)
    if image.mode in _ALPHA_MODES or image.mode == "P" or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_gray(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey to 8-bit: Pillow's own conversion clips everything to white.

    float32 throughout (callers shrink first, so this runs on the planned size, not the original).
    """
    sixteen = image.mode.startswith("I;16")
    import numpy as np  # only float images need it; a client's start skips numpy

    pixels = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        finite = pixels[np.isfinite(pixels)]
        peak = float(finite.max()) if finite.size else 0.0
        pixels = np.nan_to_num(pixels, nan=0.0, posinf=255.0, neginf=0.0)
        if peak <= 1.0:
            pixels *= 255.0
    elif sixteen or float(pixels.max(initial=0)) > 255:
        pixels /= 257.0  # 0..65535 onto 0..255
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "L")


def _orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole PNG looking for a late eXIf chunk
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: treat as upright
        return 1
    return value if isinstance(value, int) else 1


def _upright_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if _orientation(image) in _QUARTER_TURNS else (width, height)


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF: show the pixels as stored rather than fail
        return image


def _verify_data(image: Image.Image, path: str, name: str) -> None:
    """Check the pixel data is all there, as cheaply as the format allows; nothing is kept."""
    height = image.height
    if image.format == "PNG":
        with Image.open(path) as fresh:
            fresh.verify()  # chunk structure and CRCs up to IEND, without inflating pixels
        return
    if image.format == "JPEG":
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    if image.format == "TIFF" and strips_in_file(image, path):
        return  # uncompressed strips that all lie inside the file: nothing can be missing
    with native_stderr_captured() as said:
        image.load()
    image.info["_native_lines"] = len(said)
    if image.format == "JPEG":
        check_jpeg_rows(image, height, name)


def _native_notes(image: Image.Image, name: str) -> tuple[str, ...]:
    if image.format == "TIFF" and image.info.get("_native_lines"):
        return (f"{name}: libtiff reported tags or data it could not read; the picture may be incomplete",)
    return ()


def _gif_layout(path: str, name: str) -> gif.GifLayout:
    try:
        layout = gif.read_layout(path)
    except (OSError, gif.GifFormatError) as exc:
        raise _corrupt(name, exc) from None
    width, height = layout.extent
    if width * height > MAX_PIXELS:
        raise _bomb(name, (width, height))
    if not layout.frames:
        raise MediaError(f"{name}: the GIF holds no image (it is corrupt or truncated)",
                         "open it in an image viewer to check; re-export or re-download it")
    return layout


def _gif_info(layout: gif.GifLayout, name: str) -> ImageInfo:
    starts, clock = [], 0.0
    for frame in layout.frames:
        starts.append(clock)
        clock += (frame.delay_ms if frame.delay_ms > 10 else DEFAULT_FRAME_MS) / 1000.0
    notes = () if layout.complete else (
        f"{name}: the file is cut off after frame {len(layout.frames)} (at {clock:.1f} s); "
        "the rest of the animation is missing",
    )
    width, height = layout.extent
    return ImageInfo("GIF", layout.canvas, True, tuple(starts), clock, notes, width * height)


def _animation_info(image: Image.Image, fmt: str, frames: int, name: str, path: str) -> ImageInfo:
    pixels = image.width * image.height
    try:
        with open(path, "rb") as handle, gif.mapped(handle) as data:
            delays = animation.frame_delays(data)
    except OSError:
        delays = None
    if delays is None or len(delays) != frames:
        delays = _seek_delays(image, frames, name)
    starts: list[float] = []
    clock = 0.0
    for ms in delays:
        starts.append(clock)
        clock += (ms if ms > 10 else DEFAULT_FRAME_MS) / 1000.0
    return ImageInfo(fmt, image.size, True, tuple(starts), clock, (), pixels)


def _seek_delays(image: Image.Image, frames: int, name: str) -> list[int]:
    """Durations by decoding every frame: only when the chunks could not be read, and bounded."""
    pixels = image.width * image.height
    if frames * pixels > MAX_COMPOSITE_PIXELS:
        raise MediaError(
            f"{name}: {frames} frames on the {image.width}x{image.height} canvas are too much to read "
            f"({frames * pixels / 1e9:,.0f} gigapixels; the limit is {MAX_COMPOSITE_PIXELS / 1e9:g})",
            f"convert it to a video first: ffmpeg -i {name} clip.mp4",
        )
    delays = []
    with native_stderr_captured():
        for index in range(frames):
            image.seek(index)
            delays.append(int(image.info.get("duration") or 0))
    return delays


@contextmanager
def _opened(path: str, name: str) -> Iterator[Image.Image]:
    """Open with Pillow, refusing bombs; any decoder failure inside becomes a `MediaError`."""
    with warnings.catch_warnings():
        # Pillow warns about bombs and odd metadata; we decide and report ourselves.
        warnings.simplefilter("ignore")
        try:
            with native_stderr_captured(), Image.open(path) as image:
                _check_size(image, name)
                yield image
        except MediaError:
            raise
        except Image.DecompressionBombError as exc:
            raise _bomb(name, _declared_pixels(str(exc))) from None
        except Image.UnidentifiedImageError:
            raise MediaError(
                f"{name}: Pillow cannot read this image (it is corrupt, or a variant this Pillow build lacks)",
                "convert it to PNG or JPEG first, or upgrade Pillow",
            ) from None
        except MemoryError:
            raise MediaError(f"{name}: not enough memory to decode this image", "shrink it first") from None
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on bad data
            raise _corrupt(name, exc) from None


def _check_size(image: Image.Image, name: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise MediaError(f"{name}: the image has no pixels ({width}x{height})", "check the file")
    if width * height > MAX_PIXELS:
        raise _bomb(name, (width, height))


def _declared_pixels(pillow_message: str) -> int | None:
    # Pillow refuses before we see the size; its message carries the pixel count.
    found = re.search(r"\((\d+) pixels\)", pillow_message)
    return int(found.group(1)) if found else None


def _bomb(name: str, size: tuple[int, int] | int | None) -> MediaError:
    if isinstance(size, tuple):
        declared = f"declares {size[0]}x{size[1]} pixels"
    elif size is not None:
        declared = f"declares {size / 1_000_000:,.0f} megapixels"
    else:
        declared = "declares too many pixels"
    return MediaError(
        f"{name}: {declared}, over the {MAX_PIXELS // 1_000_000}-megapixel safety limit "
        "(a possible decompression bomb)",
        "if the image is genuine, shrink it first, e.g. magick in.png -resize 8000x8000 out.png",
    )


def _corrupt(name: str, exc: Exception) -> MediaError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return MediaError(
        f"{name}: the image data is corrupt or truncated ({detail})",
        "open it in an image viewer to check; re-export or re-download it",
    )
