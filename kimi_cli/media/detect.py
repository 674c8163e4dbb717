"""Check that an input path is a readable file and tell its kind from its first bytes.

The extension is never trusted: a PNG named `scan.pdf` is an image, and a text file named
`photo.jpg` is refused as text. Every failure is a one-line `MediaError` naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Literal

from kimi_cli.errors import MediaError

FileKind = Literal["image", "pdf", "video"]

#: Bytes read for sniffing: enough for an MPEG-TS sync check (3 x 188) and an ftyp brand list.
HEAD_SIZE = 4096

SUPPORTED = (
    "images (PNG, JPEG, GIF, WebP, BMP, TIFF, AVIF), PDFs and videos (MP4, MOV, MKV, WebM, AVI, MPEG-TS)"
)


@dataclass(frozen=True)
class Detected:
    """What a file holds: the kind of input and the container or image format."""

    kind: FileKind
    format: str


# (offset, magic, kind, format) for formats whose signature is a fixed byte string.
_SIGNATURES: tuple[tuple[int, bytes, FileKind, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image", "PNG"),
    (0, b"\xff\xd8\xff", "image", "JPEG"),
    (0, b"GIF87a", "image", "GIF"),
    (0, b"GIF89a", "image", "GIF"),
    (0, b"BM", "image", "BMP"),
    (0, b"II*\x00", "image", "TIFF"),
    (0, b"MM\x00*", "image", "TIFF"),
    (0, b"\x1a\x45\xdf\xa3", "video", "Matroska/WebM"),
    (0, b"\x00\x00\x01\xba", "video", "MPEG-PS"),
    (0, b"FLV\x01", "video", "FLV"),
)

# Formats we recognise only to refuse them with a better line than "unrecognised".
_UNSUPPORTED: tuple[tuple[int, bytes, str, str], ...] = (
    (
        0,
        b"PK\x03\x04",
        "a ZIP archive (or an Office/EPUB document)",
        "extract it, or export documents to PDF",
    ),
    (0, b"\x1f\x8b", "a gzip archive", "decompress it first"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract it first"),
    (0, b"Rar!", "a RAR archive", "extract it first"),
    (257, b"ustar", "a tar archive", "extract it first"),
    (0, b"ID3", "an MP3 audio file", "Kimi-VL has no audio input"),
    (0, b"fLaC", "a FLAC audio file", "Kimi-VL has no audio input"),
    (0, b"OggS", "an Ogg file", "convert video to MP4; Kimi-VL has no audio input"),
    (0, b"\x7fELF", "an executable", "pass an image, PDF or video"),
    (0, b"SQLite format 3\x00", "an SQLite database", "pass an image, PDF or video"),
)

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P "}


def check_file(path: str, name: str | None = None) -> int:
    """Check that `path` is an existing, readable, non-empty regular file; return its size.

    Raises `MediaError` naming the file as `name` (default: `path`) for a missing path, a
    dangling symlink, a directory, a pipe or device, a file the user may not read, and an
    empty file.
    """
    shown = name or path
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = os.readlink(path)
            raise MediaError(
                f"{shown}: broken symbolic link (it points to {target!r}, which does not exist)",
                "fix or remove the link, or pass the file it should point to",
            ) from None
        raise MediaError(f"{shown}: no such file", f"check the path (relative to {os.getcwd()})") from None
    except PermissionError:
        raise _unreadable(shown) from None
    except OSError as exc:
        raise _os_error(shown, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise MediaError(f"{shown}: is a directory", f"pass the files in it, e.g. {shown.rstrip('/')}/*.jpg")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(
            f"{shown}: not a regular file (a pipe, socket or device)", "save the data to a file and pass that"
        )
    if st.st_size == 0:
        raise MediaError(
            f"{shown}: the file is empty (0 bytes)", "check that it was fully written or downloaded"
        )
    return st.st_size


def read_head(path: str, name: str | None = None, size: int = HEAD_SIZE) -> bytes:
    """The first `size` bytes of `path`, or a one-line `MediaError` if it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except PermissionError:
        raise _unreadable(name or path) from None
    except OSError as exc:
        raise _os_error(name or path, exc) from None


def detect(path: str, name: str | None = None) -> Detected:
    """Check `path` (see `check_file`) and sniff its kind from its first bytes.

    Messages name the file as `name` (default: `path`).
    """
    check_file(path, name)
    head = read_head(path, name)
    found = sniff(head)
    if found is None:
        what, hint = describe_unsupported(head)
        raise MediaError(f"{name or path}: {what} is not supported; kimi reads {SUPPORTED}", hint)
    return found


def sniff(head: bytes) -> Detected | None:
    """The kind of a file from its first bytes, or None if it is not one we read (pure)."""
    for offset, magic, kind, fmt in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return Detected(kind, fmt)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Detected("image", "WebP")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Detected("video", "AVI")
    # PDF readers accept junk before the header; the spec allows it within the first 1024 bytes.
    if b"%PDF-" in head[:1024]:
        return Detected("pdf", "PDF")
    if _is_mpeg_ts(head):
        return Detected("video", "MPEG-TS")
    return _sniff_iso_media(head)


def _sniff_iso_media(head: bytes) -> Detected | None:
    """MP4/MOV family: an `ftyp` box (brands tell video from AVIF/HEIF images), or an old MOV."""
    if head[4:8] != b"ftyp":
        # QuickTime files from before `ftyp` start straight with one of these boxes.
        if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"pnot"):
            return Detected("video", "MOV")
        return None
    brands = _ftyp_brands(head)
    if brands & _AVIF_BRANDS:
        return Detected("image", "AVIF")
    if brands & _HEIF_BRANDS or brands & _AUDIO_BRANDS:
        return None
    return Detected("video", "MOV" if head[8:12] == b"qt  " else "MP4")


def _ftyp_brands(head: bytes) -> set[bytes]:
    box_size = int.from_bytes(head[0:4], "big")
    end = min(max(box_size, 16), len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    return {head[8:12]} | compatible


def _is_mpeg_ts(head: bytes) -> bool:
    # One sync byte proves nothing (0x47 is 'G'); three packets 188 bytes apart do.
    if len(head) >= 377 and all(head[i] == 0x47 for i in (0, 188, 376)):
        return True
    # Blu-ray M2TS prefixes each packet with a 4-byte timestamp.
    return len(head) >= 389 and all(head[i] == 0x47 for i in (4, 196, 388))


def describe_unsupported(head: bytes) -> tuple[str, str]:
    """A phrase naming what an unsupported file seems to be, and a hint (pure)."""
    for offset, magic, what, hint in _UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            return what, hint
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "a WAV audio file", "Kimi-VL has no audio input"
    if head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _HEIF_BRANDS:
            return "a HEIC/HEIF image", "convert it to JPEG or PNG first (e.g. with heif-convert)"
        return "an MPEG-4 audio file", "Kimi-VL has no audio input"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "an MPEG audio file", "Kimi-VL has no audio input"
    if _looks_like_text(head):
        lowered = head.lower()
        if b"<svg" in lowered:
            return "an SVG image", "convert it to PNG first (e.g. rsvg-convert -o out.png in.svg)"
        return "a text file", 'put text in the prompt instead, e.g. "$(cat notes.txt) Summarise this."'
    return "an unrecognised file type", "convert it to PNG/JPEG, PDF or MP4 first"


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the head size is still text.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _unreadable(path: str) -> MediaError:
    return MediaError(f"{path}: permission denied", "check the file's permissions (ls -l), e.g. chmod u+r")


def _os_error(path: str, exc: OSError) -> MediaError:
    if exc.errno == errno.ELOOP:
        return MediaError(f"{path}: symbolic link loop", "fix the link so it points to a real file")
    reason = exc.strerror or str(exc)
    return MediaError(f"{path}: cannot read the file ({reason})", "check that the file is accessible")
