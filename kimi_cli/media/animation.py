"""Frame durations of animated PNG and WebP files from their chunks (pure, no decoding).

Pillow learns an APNG's frame durations only by decoding every frame (seconds for a large one),
and reports a WebP's only after decoding. Both formats state them in small chunks: APNG in each
`fcTL` (delay numerator and denominator), WebP in each `ANMF` (24-bit milliseconds).
"""

from __future__ import annotations

import mmap
import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def frame_delays(data: bytes | mmap.mmap) -> list[int] | None:
    """Each frame's duration in ms for APNG or animated WebP `data`; None when not readable."""
    if data[:8] == _PNG_SIGNATURE:
        return _apng(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _apng(data: bytes | mmap.mmap) -> list[int] | None:
    delays: list[int] = []
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        body = data[at + 8 : at + 8 + length]
        if len(body) < length:
            break
        if kind == b"fcTL" and length >= 26:
            numerator, denominator = struct.unpack_from(">HH", body, 20)
            delays.append(round(numerator * 1000 / (denominator or 100)))
        if kind == b"IEND":
            break
        at += 12 + length
    return delays or None


def _webp(data: bytes | mmap.mmap) -> list[int] | None:
    delays: list[int] = []
    at = 12
    while at + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, at)
        if kind == b"ANMF" and length >= 16 and at + 8 + 16 <= len(data):
            delays.append(int.from_bytes(data[at + 8 + 12 : at + 8 + 15], "little"))
        at += 8 + length + (length & 1)
    return delays or None
