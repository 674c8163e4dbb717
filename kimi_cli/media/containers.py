"""What a video container says about its own length, read from its header bytes (pure, no decoder).

decord reports the frames it finds; comparing with the length the header declares tells a
truncated download (an AVI that ends at 1.3 s of 5.6 s) from a short clip. Only AVI (`avih`),
Matroska/WebM (`Segment/Info/Duration`) and MP4/MOV (`mvhd`) are read; anything else gives None.
"""

from __future__ import annotations

import os
import struct
from typing import Any

#: Bounds on the chunk walk (a 1-hour 60 fps AVI has 216,000 frame chunks).
_MAX_TOP_CHUNKS = 64
_MAX_CHUNKS = 4_000_000

#: Header fields live near the start (MP4 may keep `moov` at the end: both ends are searched).
_SCAN_BYTES = 1 << 20


def declared_duration(path: str) -> tuple[float, bool] | None:
    """The duration in seconds that the file's header claims and whether it is the video's own
    (AVI's frame count, Matroska's segment) rather than the longest track's (MP4's `mvhd`);
    None when unknown or absurd."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SCAN_BYTES)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - _SCAN_BYTES))
            tail = handle.read(_SCAN_BYTES) if size > _SCAN_BYTES else b""
    except OSError:
        return None
    return parse_declared_duration(head, tail)


def parse_declared_duration(head: bytes, tail: bytes = b"") -> tuple[float, bool] | None:
    """`declared_duration` on bytes: the first and last megabyte of a file."""
    strict = True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        found = _avi(head)
    elif head[:4] == b"\x1a\x45\xdf\xa3":
        found = _matroska(head)
    else:
        found, strict = _mvhd(head) or _mvhd(tail), False
    if found is None or not 0 < found < 1e7:
        return None
    return found, strict


def _avi(data: bytes) -> float | None:
    at = data.find(b"avih")
    if at < 0 or len(data) < at + 8 + 20:
        return None
    usec_per_frame, _rate, _pad, _flags, frames = struct.unpack_from("<5I", data, at + 8)
    return frames * usec_per_frame / 1e6 if usec_per_frame and frames else None


def _matroska(data: bytes) -> float | None:
    # TimecodeScale (0x2AD7B1, default 1 ms) and Duration (0x4489, a float in those units).
    scale = 1_000_000
    at = data.find(b"\x2a\xd7\xb1")
    if at >= 0 and at + 4 < len(data) and data[at + 3] & 0x80:
        length = data[at + 3] & 0x7F
        if 1 <= length <= 8:
            scale = int.from_bytes(data[at + 4 : at + 4 + length], "big") or scale
    at = data.find(b"\x44\x89")
    while at >= 0:
        marker = data[at + 2] if at + 2 < len(data) else 0
        if marker in (0x84, 0x88):
            fmt, length = (">f", 4) if marker == 0x84 else (">d", 8)
            if at + 3 + length <= len(data):
                (value,) = struct.unpack_from(fmt, data, at + 3)
                return value * scale / 1e9
        at = data.find(b"\x44\x89", at + 1)
    return None


def _mvhd(data: bytes) -> float | None:
    at = data.find(b"mvhd")
    if at < 0 or len(data) < at + 4 + 28:
        return None
    version = data[at + 4]
    if version == 1:
        timescale, duration = struct.unpack_from(">IQ", data, at + 4 + 4 + 16)
    else:
        timescale, duration = struct.unpack_from(">II", data, at + 4 + 4 + 8)
    return duration / timescale if timescale else None


def avi_whole_chunks_length(path: str) -> int | None:
    """For an AVI whose `movi` list is cut inside a chunk (a truncated download), the length in bytes
    up to the end of its last whole chunk; None for anything else.

    decord reads ahead of the frame it is asked for; a partial last chunk then fails the whole read at
    random (how far ahead depends on timing), so the decoder is given only the whole chunks.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(12)[8:12] != b"AVI ":
                return None
            movi = _find_movi(handle, size)
            if movi is None or movi[1] <= size:
                return None  # no frame list, or one that ends inside the file: nothing is cut
            return _last_whole_chunk(handle, movi[0], size)
    except OSError:
        return None


def _find_movi(handle: Any, size: int) -> tuple[int, int] | None:
    """(offset of the first chunk in `movi`, the offset the list claims to end at)."""
    pos = 12
    for _ in range(_MAX_TOP_CHUNKS):
        if pos + 12 > size:
            return None
        handle.seek(pos)
        header = handle.read(12)
        chunk_id, length = header[:4], struct.unpack("<I", header[4:8])[0]
        if chunk_id == b"LIST" and header[8:12] == b"movi":
            return pos + 12, pos + 8 + length
        pos += 8 + length + (length & 1)
    return None


def _last_whole_chunk(handle: Any, pos: int, size: int) -> int | None:
    """Walk the chunk headers from `pos`; the end of the last chunk that the file holds whole."""
    end = pos
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > size:
            break
        handle.seek(pos)
        header = handle.read(8)
        chunk_id, length = header[:4], struct.unpack("<I", header[4:8])[0]
        if chunk_id == b"LIST":  # a `rec ` group: its chunks follow its 12-byte header
            pos += 12
            continue
        nxt = pos + 8 + length + (length & 1)
        if pos + 8 + length > size:
            break
        end = pos = nxt
    return end if end < size else None
