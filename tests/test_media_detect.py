"""Detection by content: signatures (table-driven, pure) and path checks on real files."""

from __future__ import annotations

import os
import struct

import pytest
from media_fixtures import run_unprivileged, unreadable_file

from kimi_cli.errors import EXIT_MEDIA, MediaError
from kimi_cli.media.detect import Detected, check_file, describe_unsupported, detect, sniff


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


TS = b"".join(b"\x47" + bytes(187) for _ in range(3))


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", Detected("image", "PNG")),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", Detected("image", "JPEG")),
        (b"GIF89a\x01\x00", Detected("image", "GIF")),
        (b"GIF87a\x01\x00", Detected("image", "GIF")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", Detected("image", "WebP")),
        (b"BM\x00\x00\x00\x00", Detected("image", "BMP")),
        (b"II*\x00\x08\x00", Detected("image", "TIFF")),
        (b"MM\x00*\x00\x00", Detected("image", "TIFF")),
        (b"%PDF-1.7\n", Detected("pdf", "PDF")),
        (b"\xef\xbb\xbf junk before the header %PDF-1.4\n", Detected("pdf", "PDF")),
        (_ftyp(b"isom", b"iso2", b"avc1", b"mp41"), Detected("video", "MP4")),
        (_ftyp(b"qt  ", b"qt  "), Detected("video", "MOV")),
        (_ftyp(b"avif", b"mif1", b"avif"), Detected("image", "AVIF")),
        (_ftyp(b"mif1", b"mif1", b"avif"), Detected("image", "AVIF")),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", Detected("video", "MOV")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", Detected("video", "Matroska/WebM")),
        (b"RIFF\x00\x00\x00\x00AVI LIST", Detected("video", "AVI")),
        (TS, Detected("video", "MPEG-TS")),
        (b"\x00\x00\x01\xba\x44", Detected("video", "MPEG-PS")),
    ],
)
def test_sniff_known_formats(head: bytes, expected: Detected) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("head", "phrase"),
    [
        (b"PK\x03\x04\x14\x00", "ZIP"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"ID3\x04\x00", "MP3"),
        (b"\xff\xfb\x90\x64", "MPEG audio"),
        (b"fLaC\x00", "FLAC"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "WAV"),
        (_ftyp(b"M4A ", b"M4A ", b"isom"), "MPEG-4 audio"),
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIC"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'>", "SVG"),
        ("Just some notes, naïve café".encode(), "text file"),
        (b"\x7fELF\x02\x01", "executable"),
        (b"\x00\x01\x02\x03\x04\xfe", "unrecognised"),
        (b"G" + bytes(20), "unrecognised"),  # one sync byte is not MPEG-TS
    ],
)
def test_unsupported_kinds_are_named(head: bytes, phrase: str) -> None:
    assert sniff(head) is None
    what, hint = describe_unsupported(head)
    assert phrase in what
    assert hint


def test_text_cut_inside_a_multibyte_character_is_still_text() -> None:
    head = ("é" * 2047).encode()[:4095]
    assert describe_unsupported(head)[0] == "a text file"


def test_detect_ignores_the_extension(tmp_path) -> None:
    from PIL import Image

    path = tmp_path / "scan.pdf"
    Image.new("RGB", (4, 4)).save(path, "PNG")
    assert detect(str(path)) == Detected("image", "PNG")


def test_check_file_returns_size(tmp_path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    assert check_file(str(path)) == 5


def test_messages_use_the_display_name(tmp_path) -> None:
    path = tmp_path / "stdin"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match=r"^stdin: the file is empty"):
        detect(str(path), name="stdin")


def test_symlink_loop(tmp_path) -> None:
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    with pytest.raises(MediaError, match="symbolic link loop"):
        check_file(str(loop))


def test_fifo_is_not_a_regular_file(tmp_path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="not a regular file"):
        check_file(str(fifo))


def test_unreadable_file_real_permissions() -> None:
    path, cleanup = unreadable_file()
    try:
        if os.geteuid() == 0:
            status, payload = run_unprivileged(detect, str(path))
            assert status == "error", "nobody could read a mode-000 file"
            kind, message, hint, code = payload
        else:
            with pytest.raises(MediaError) as info:
                detect(str(path))
            kind, message, hint, code = (
                "MediaError",
                info.value.message,
                info.value.hint,
                info.value.exit_code,
            )
    finally:
        cleanup()
    assert (kind, code) == ("MediaError", EXIT_MEDIA)
    assert message == f"{path}: permission denied"
    assert "chmod" in hint
