"""Checks that an image's header and its data agree, before anything is decoded (pure, header tags).

Decoders fill what is missing with grey or black, silently: a JPEG whose header says 13000x13000
over 640x427 of data decodes to 2 GB of mostly blank picture, a TIFF whose height says 65535 over
120 rows to black. These checks compare what the header promises with the bytes that are there.
"""

from __future__ import annotations

import math
import os

from PIL import Image

from kimi_cli.errors import MediaError

#: Huffman-coded JPEG spends at least one bit on every 8x8 luma block (its DC difference).
_MIN_BITS_PER_BLOCK = 1
#: JPEG processes coded with Huffman tables (baseline, extended, progressive, lossless).
_HUFFMAN_SOF = {0xC0, 0xC1, 0xC2, 0xC3}
_TIFF_UNCOMPRESSED = 1


def check_consistent(image: Image.Image, path: str, name: str) -> None:
    """Raise `MediaError` when the header claims far more pixels than the file can hold."""
    if image.format == "JPEG":
        _check_jpeg(image, path, name)
    elif image.format == "TIFF":
        _check_tiff(image, name)


def _check_jpeg(image: Image.Image, path: str, name: str) -> None:
    process = _jpeg_process(path)
    if process is None or process not in _HUFFMAN_SOF:
        return  # arithmetic coding can be far denser; no safe lower bound
    width, height = image.size
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    needed = blocks * _MIN_BITS_PER_BLOCK // 8
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size < needed:
        raise MediaError(
            f"{name}: the header declares {width}x{height} pixels, but the file ({_kb(size)}) is too "
            f"small to hold them (at least {_kb(needed)}); it is corrupt or truncated",
            "open it in an image viewer to check; re-export or re-download it",
        )


def _jpeg_process(path: str) -> int | None:
    """The SOFn marker of the first frame header (0xC0 baseline ... 0xCF), walking the segments."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return None
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker == 0xFF:
            at += 1
            continue
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return None


def _check_tiff(image: Image.Image, name: str) -> None:
    tags = getattr(image, "tag_v2", None)
    if tags is None or 322 in tags:  # tiled: no strips to count
        return
    width, height = image.size
    offsets = _as_tuple(tags.get(273))
    counts = _as_tuple(tags.get(279))
    rows_per_strip = int(_as_tuple(tags.get(278))[0] or height) if tags.get(278) else height
    if not offsets or not counts or rows_per_strip < 1:
        return
    planes = 1 if tags.get(284, 1) != 2 else max(1, int(tags.get(277, 1)))
    strips_needed = math.ceil(height / rows_per_strip) * planes
    rows_present = height
    if len(offsets) < strips_needed:
        rows_present = len(offsets) // planes * rows_per_strip
    elif tags.get(259, 1) == _TIFF_UNCOMPRESSED:
        bits = sum(_as_tuple(tags.get(258)) or (8,))
        row_bytes = math.ceil(width * bits / 8)
        rows_present = min(height, sum(int(c) for c in counts) // max(row_bytes, 1))
    if rows_present < height:
        raise MediaError(
            f"{name}: the header declares {width}x{height} pixels, but the file holds only about "
            f"{rows_present} rows; it is corrupt or truncated",
            "open it in an image viewer to check; re-export or re-download it",
        )


def check_jpeg_rows(decoded: Image.Image, height: int, name: str) -> None:
    """Refuse a JPEG whose data runs out early: libjpeg fills the rest with mid-grey, silently.

    `decoded` is the picture (any draft scale) and `height` the declared height. When the coded
    data ends, libjpeg leaves every remaining block's coefficients at zero, i.e. exactly
    (128, 128, 128); a tail of such rows over half the picture means the data is missing.
    """
    import numpy as np  # imported when used: a client's start skips numpy

    if decoded.mode not in ("RGB", "L") or decoded.height < 16:
        return
    rows = np.asarray(decoded).reshape(decoded.height, -1)
    grey = np.all(rows == 128, axis=1)
    if not grey[-1]:
        return
    changed = np.flatnonzero(~grey)
    if not changed.size:
        return  # a picture that is grey all over is a picture
    first_blank = int(changed[-1]) + 1
    if first_blank <= decoded.height // 2:
        declared = f"{decoded.width * height // decoded.height}x{height}"
        raise MediaError(
            f"{name}: the image data stops at about row {first_blank * height // decoded.height} of "
            f"{height} (the header declares {declared}); the rest would be blank grey, so it is "
            "corrupt or truncated",
            "open it in an image viewer to check; re-export or re-download it",
        )


def strips_in_file(image: Image.Image, path: str) -> bool:
    """Whether `image` is an uncompressed striped TIFF whose strips all end inside the file."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or tags.get(259, 1) != _TIFF_UNCOMPRESSED or 322 in tags:
        return False
    offsets, counts = _as_tuple(tags.get(273)), _as_tuple(tags.get(279))
    if not offsets or len(offsets) != len(counts):
        return False
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return max(o + c for o, c in zip(offsets, counts, strict=True)) <= size


def _as_tuple(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),)  # type: ignore[call-overload]


def _kb(size: int) -> str:
    return f"{size / 1024:,.0f} KB" if size >= 1024 else f"{size} bytes"
