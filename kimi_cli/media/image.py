"""Open images with Pillow: fully decoded, upright (EXIF), RGB on white, bombs refused.

An animated GIF, PNG or WebP is an animation: its frames are sampled like a video's, with
timestamps from the frames' own durations.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from kimi_cli.errors import MediaError

#: Refuse images above this many pixels before decoding. Pillow warns at 89 MP and fails at twice
#: that; we allow up to its hard limit so that 100-megapixel camera photos still open.
MAX_PIXELS = 2 * 89_478_485
#: Browsers show GIF frames that declare 0-10 ms for 100 ms; do the same so timestamps match.
DEFAULT_FRAME_MS = 100
_ANIMATED_FORMATS = {"GIF", "PNG", "WEBP"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


@dataclass(frozen=True, eq=False)
class ImageInfo:
    """An opened image: a decoded still, or the timing of an animation's frames."""

    format: str
    size: tuple[int, int]  # (width, height), upright
    still: Image.Image | None  # RGB, decoded; None for an animation
    starts: tuple[float, ...] = (0.0,)  # frame start times in seconds
    duration: float = 0.0  # seconds, 0 for a still
    notes: tuple[str, ...] = ()

    @property
    def animated(self) -> bool:
        """Whether the file is an animation (more than one frame with timing)."""
        return self.still is None


def probe_image(path: str, name: str) -> ImageInfo:
    """Open `path` and decode it fully (a still) or read its frame timing (an animation).

    Raises a one-line `MediaError` for a decompression bomb, corrupt or truncated data, or a
    colour mode that cannot become RGB.
    """
    with _opened(path, name) as image:
        fmt = image.format or "image"
        frames = getattr(image, "n_frames", 1)
        if frames > 1 and fmt in _ANIMATED_FORMATS:
            starts, duration = _frame_timing(image, frames)
            return ImageInfo(fmt, image.size, None, starts, duration)
        still = to_rgb(_upright(image))
        notes = (f"{name}: {frames} pages in this {fmt}; only the first is read",) if frames > 1 else ()
        return ImageInfo(fmt, still.size, still, notes=notes)


def load_frames(path: str, name: str, indices: Sequence[int]) -> list[Image.Image]:
    """Decode the animation frames at `indices` (ascending) as RGB images."""
    frames: list[Image.Image] = []
    with _opened(path, name) as image:
        for index in indices:
            # Seeking forward replays disposal, so each frame comes out fully composed.
            image.seek(index)
            frames.append(to_rgb(image))
    return frames


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
    """16-bit, 32-bit and float grey to 8-bit: Pillow's own conversion clips everything to white."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = float(pixels.max()) if pixels.size else 0.0
        pixels = pixels * 255.0 if peak <= 1.0 else pixels
    elif image.mode.startswith("I;16") or float(pixels.max(initial=0)) > 255:
        pixels = pixels / 257.0  # 0..65535 onto 0..255
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "L")


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF: show the pixels as stored rather than fail
        image.load()
        return image


def _frame_timing(image: Image.Image, frames: int) -> tuple[tuple[float, ...], float]:
    starts: list[float] = []
    clock = 0.0
    for index in range(frames):
        image.seek(index)
        ms = image.info.get("duration") or 0
        starts.append(clock)
        clock += (ms if ms > 10 else DEFAULT_FRAME_MS) / 1000.0
    return tuple(starts), clock


@contextmanager
def _opened(path: str, name: str) -> Iterator[Image.Image]:
    """Open with Pillow, refusing bombs; any decoder failure inside becomes a `MediaError`."""
    with warnings.catch_warnings():
        # Pillow warns about bombs and odd metadata; we decide and report ourselves.
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as image:
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
