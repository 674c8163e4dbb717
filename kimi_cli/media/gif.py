"""A GIF's structure from its bytes alone: canvas, frame rectangles and delays (pure, no decoding).

Pillow learns a GIF's frame count and timing by decoding and compositing every frame onto the
full canvas, which a 9 KB file with 400 frames on an 8000x8000 canvas turns into minutes. Walking
the block structure instead reads each frame's header and skips its pixel data: milliseconds for
any file, and it says whether the file ends before its trailer (a truncated download).
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class GifFrame:
    """One image block: where it sits on the canvas and how long it shows."""

    box: tuple[int, int, int, int]  # left, top, width, height
    delay_ms: int  # from the Graphic Control Extension; 0 when absent


@dataclass(frozen=True)
class GifLayout:
    """What the file declares: the logical screen, its frames, and whether it ends properly."""

    canvas: tuple[int, int]  # (width, height) of the logical screen
    frames: tuple[GifFrame, ...]
    complete: bool  # the trailer (0x3B) was reached with every block whole

    @property
    def extent(self) -> tuple[int, int]:
        """The canvas grown to hold every frame (Pillow enlarges the image the same way)."""
        width, height = self.canvas
        for frame in self.frames:
            left, top, w, h = frame.box
            width, height = max(width, left + w), max(height, top + h)
        return width, height


class GifFormatError(ValueError):
    """The bytes are not a GIF this walker can follow."""


def read_layout(path: str) -> GifLayout:
    """`parse_layout` on the file at `path` (mapped, not read: only headers are touched)."""
    with open(path, "rb") as handle, mapped(handle) as data:
        return parse_layout(data)


def mapped(handle: BinaryIO) -> mmap.mmap | contextlib.nullcontext[bytes]:
    """The open file as a read-only memory map (an empty file as empty bytes)."""
    try:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError:  # empty file
        return contextlib.nullcontext(b"")


def parse_layout(data: bytes | mmap.mmap) -> GifLayout:
    """The layout of GIF `data`; raises `GifFormatError` when it is not a GIF at all."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise GifFormatError("no GIF signature")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames: list[GifFrame] = []
    delay = 0
    while at < len(data):
        block = data[at]
        if block == 0x3B:
            return GifLayout((width, height), tuple(frames), True)
        if block == 0x21:
            if at + 2 > len(data):
                break
            label = data[at + 1]
            if label == 0xF9 and at + 8 <= len(data):
                delay = struct.unpack_from("<H", data, at + 4)[0] * 10
            at = _skip_sub_blocks(data, at + 2)
        elif block == 0x2C:
            if at + 10 > len(data):
                break
            left, top, w, h, image_flags = struct.unpack_from("<HHHHB", data, at + 1)
            at += 10 + (3 << ((image_flags & 7) + 1) if image_flags & 0x80 else 0)
            at = _skip_sub_blocks(data, at + 1)  # +1: the LZW minimum code size
            if at > len(data):
                break
            frames.append(GifFrame((left, top, w, h), delay))
            delay = 0
        else:
            break  # junk where a block should start: treat the rest as missing
    return GifLayout((width, height), tuple(frames), False)


def _skip_sub_blocks(data: bytes | mmap.mmap, at: int) -> int:
    """The offset after a chain of length-prefixed sub-blocks (past the end if it is cut)."""
    while at < len(data):
        size = data[at]
        at += 1 + size
        if size == 0:
            return at
    return len(data) + 1
