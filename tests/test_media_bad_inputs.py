"""Bad inputs, end to end through `make_plan`: each is one line with a hint and a documented code.

Every case goes through the same entry point the CLI uses before it loads a model, with real
files made by real writers. Exit codes: 3 (`MediaError`) for a bad file, 2 (`UsageError`) for
a bad selection or option.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from media_fixtures import (
    MediaSet,
    audio_only_mp4,
    encrypted_pdf,
    noise_png,
    png_with_dimensions,
    run_unprivileged,
    truncated,
    unreadable_file,
    wav_file,
    zero_frame_video,
    zero_page_pdf,
    zip_file,
)
from PIL import Image

from kimi_cli.errors import EXIT_MEDIA, EXIT_USAGE, KimiError
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import ImagePart
from kimi_cli.plan import load_inputs, make_plan

Build = Callable[[Path, MediaSet], tuple[list[str], dict[str, object], str]]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("bad"))


def _file(name: str, write: Callable[[Path], object]) -> Build:
    """A case made of one file written by `write`; the message must name that file."""

    def build(tmp: Path, media: MediaSet) -> tuple[list[str], dict[str, object], str]:
        path = tmp / name
        write(path)
        return [str(path)], {}, str(path)

    return build


def _with(spec: Callable[[MediaSet], str], flags: dict[str, object], names: str | None = None) -> Build:
    """A case of a good file plus options; the message must name `names` or the file."""

    def build(tmp: Path, media: MediaSet) -> tuple[list[str], dict[str, object], str]:
        path = spec(media)
        return [path], flags, names or path.split(":")[0]

    return build


def _photo(media: MediaSet) -> str:
    return str(media.get("ok.png", lambda p: Image.new("RGB", (8, 8)).save(p)))


def _pdf(media: MediaSet) -> str:
    return str(media.pdf())  # 3 pages


def _video(media: MediaSet) -> str:
    return str(media.video())  # 3 s


def _dangling(path: Path) -> None:
    os.symlink(path.with_name("gone.png"), path)


def _loop(path: Path) -> None:
    os.symlink(path, path)


def _ftyp_junk(path: Path) -> None:
    path.write_bytes(struct.pack(">I", 16) + b"ftypisom\x00\x00\x02\x00" + os.urandom(2000))


def _second_missing(tmp: Path, media: MediaSet) -> tuple[list[str], dict[str, object], str]:
    missing = str(tmp / "typo.jpg")
    return [_photo(media), missing, _pdf(media)], {}, missing


CASES: list[tuple[str, Build, int, str]] = [
    ("empty file", _file("empty.png", lambda p: p.write_bytes(b"")), EXIT_MEDIA, "the file is empty"),
    (
        "truncated png",
        _file("cut.png", lambda p: truncated(p, noise_png(p.with_name("w.png")))),
        EXIT_MEDIA,
        "corrupt or truncated",
    ),
    (
        "png signature then junk",
        _file("junk.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 50)),
        EXIT_MEDIA,
        "corrupt or truncated",
    ),
    ("directory", _file("album", lambda p: p.mkdir()), EXIT_MEDIA, "is a directory"),
    ("dangling symlink", _file("link.png", _dangling), EXIT_MEDIA, "broken symbolic link"),
    ("symlink loop", _file("loop.png", _loop), EXIT_MEDIA, "symbolic link loop"),
    (
        "nonexistent file",
        lambda t, m: ([str(t / "nope.jpg")], {}, str(t / "nope.jpg")),
        EXIT_MEDIA,
        "no such file",
    ),
    ("missing file among good ones", _second_missing, EXIT_MEDIA, "no such file"),
    (
        "text file named .jpg",
        _file("notes.jpg", lambda p: p.write_text("hello, not a photo\n")),
        EXIT_MEDIA,
        "a text file is not supported",
    ),
    (
        "svg named .png",
        _file("icon.png", lambda p: p.write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")),
        EXIT_MEDIA,
        "an SVG image is not supported",
    ),
    ("zip archive", _file("photos.zip", zip_file), EXIT_MEDIA, "a ZIP archive"),
    ("wav audio", _file("voice.wav", wav_file), EXIT_MEDIA, "a WAV audio file is not supported"),
    (
        "decompression bomb",
        _file("bomb.png", lambda p: png_with_dimensions(p, 60_000, 60_000)),
        EXIT_MEDIA,
        "safety limit",
    ),
    (
        "encrypted pdf",
        lambda t, m: _file("locked.pdf", lambda p: encrypted_pdf(p, m.pdf()))(t, m),
        EXIT_MEDIA,
        "encrypted with a password",
    ),
    ("zero-page pdf", _file("blank.pdf", zero_page_pdf), EXIT_MEDIA, "has no pages"),
    (
        "corrupt pdf",
        _file("broken.pdf", lambda p: p.write_bytes(b"%PDF-1.7\n%%garbage" * 20)),
        EXIT_MEDIA,
        "corrupt or not a valid PDF",
    ),
    (
        "truncated video",
        lambda t, m: _file("cut.mp4", lambda p: truncated(p, m.video(), 0.5))(t, m),
        EXIT_MEDIA,
        "truncated",
    ),
    ("mp4 header then junk", _file("junk.mp4", _ftyp_junk), EXIT_MEDIA, "video"),
    (
        "zero-frame avi",
        _file("none.avi", lambda p: zero_frame_video(p, "mjpeg")),
        EXIT_MEDIA,
        "no decodable frames",
    ),
    (
        "zero-frame mp4",
        _file("none.mp4", lambda p: zero_frame_video(p, "libx264")),
        EXIT_MEDIA,
        "no video stream",
    ),
    ("audio-only mp4", _file("talk.mp4", audio_only_mp4), EXIT_MEDIA, "no video stream"),
    (
        "pages out of range (--pages)",
        _with(_pdf, {"pages": "2-5"}),
        EXIT_MEDIA,
        "asks for page 5, but there are only 3",
    ),
    ("pages out of range (suffix)", _with(lambda m: _pdf(m) + ":9", {}), EXIT_MEDIA, "asks for page 9"),
    ("garbage page selection", _with(_pdf, {"pages": "first"}), EXIT_USAGE, "cannot read 'first'"),
    ("reversed page selection", _with(lambda m: _pdf(m) + ":3-1", {}), EXIT_USAGE, "runs backwards"),
    ("page selection on an image", _with(lambda m: _photo(m) + ":1", {}), EXIT_USAGE, "only applies to PDFs"),
    ("--pages without a pdf", _with(_photo, {"pages": "1"}, "--pages"), EXIT_USAGE, "no input is a PDF"),
    ("time range past the end", _with(_video, {"time_range": "00:10-00:20"}), EXIT_MEDIA, "past the end"),
    (
        "--range without a video",
        _with(_photo, {"time_range": "1-2"}, "--range"),
        EXIT_USAGE,
        "no input is one",
    ),
    (
        "too many images for the budget",
        _with(_pdf, {"max_image_tokens": 100}, "--max-image-tokens"),
        EXIT_USAGE,
        "3 images need at least 192",
    ),
]

OPTION_CASES: list[tuple[str, dict[str, object], str]] = [
    ("reversed time range", {"time_range": "01:30-00:10"}, "not after the start"),
    ("garbage time range", {"time_range": "soon-later"}, "cannot read 'soon'"),
    ("zero fps", {"fps": 0.0}, "--fps 0"),
    ("tiny budget", {"max_image_tokens": 8}, "--max-image-tokens 8"),
]


def _assert_one_line(error: KimiError, code: int, fragment: str, names: str) -> None:
    assert error.exit_code == code
    assert fragment in error.message
    assert names in error.message
    assert "\n" not in error.message and "Traceback" not in error.message
    assert error.hint and "\n" not in error.hint


@pytest.mark.parametrize(("build", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, media: MediaSet, build: Build, code: int, fragment: str) -> None:
    specs, flags, names = build(tmp_path, media)
    with pytest.raises(KimiError) as info:
        make_plan(specs, MediaOptions(**flags))  # type: ignore[arg-type]
    _assert_one_line(info.value, code, fragment, names)
    assert info.value.__suppress_context__ or info.value.__cause__ is None  # no chained traceback


@pytest.mark.parametrize(
    ("flags", "fragment"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_bad_option_fails_before_any_file_is_read(flags: dict[str, object], fragment: str) -> None:
    with pytest.raises(KimiError) as info:
        MediaOptions(**flags)  # type: ignore[arg-type]
    _assert_one_line(info.value, EXIT_USAGE, fragment, "--")


def test_unreadable_file() -> None:
    path, cleanup = unreadable_file()
    try:
        if os.geteuid() == 0:  # root reads mode-000 files, so try as nobody
            status, payload = run_unprivileged(lambda: make_plan([str(path)]))
        else:
            try:
                make_plan([str(path)])
                status, payload = "ok", None
            except KimiError as exc:
                status, payload = "error", (type(exc).__name__, exc.message, exc.hint, exc.exit_code)
    finally:
        cleanup()
    assert status == "error"
    kind, message, hint, code = payload
    assert (kind, code, message) == ("MediaError", EXIT_MEDIA, f"{path}: permission denied")
    assert hint


@pytest.mark.parametrize(
    ("name", "write", "kind"),
    [
        ("photo.pdf", lambda p, m: Image.new("RGB", (8, 8), (1, 2, 3)).save(p, "PNG"), "image"),
        ("doc.jpg", lambda p, m: p.write_bytes(m.pdf().read_bytes()), "pdf"),
        ("clip.gif", lambda p, m: p.write_bytes(m.video().read_bytes()), "video"),
        ("noext", lambda p, m: Image.new("RGB", (8, 8)).save(p, "WEBP"), "image"),
    ],
)
def test_wrong_extension_still_works(tmp_path: Path, media: MediaSet, name: str, write, kind: str) -> None:
    path = tmp_path / name
    write(path, media)
    (item,) = load_inputs([str(path)])
    assert item.kind == kind
    assert any(isinstance(part, ImagePart) for part in item.parts)
