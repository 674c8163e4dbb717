"""PDF page selection (pure) and reading real PDFs written by fpdf2, Pillow and pikepdf."""

from __future__ import annotations

import numpy as np
import pytest
from media_fixtures import MediaSet, encrypted_pdf, pillow_pdf, rotated_pdf, zero_page_pdf

from kimi_cli.errors import EXIT_MEDIA, EXIT_USAGE, MediaError, UsageError
from kimi_cli.media.pdf import format_page_ranges, parse_page_ranges, probe_pdf, render_pages, render_size


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> MediaSet:
    return MediaSet(tmp_path_factory.mktemp("pdf"))


@pytest.mark.parametrize(
    ("spec", "n", "pages"),
    [
        ("1-3,7", 12, (1, 2, 3, 7)),
        ("5-", 7, (5, 6, 7)),
        ("-3", 12, (1, 2, 3)),
        ("7,1-2", 12, (7, 1, 2)),  # order as written
        ("1-3,2,3-4", 12, (1, 2, 3, 4)),  # no repeats
        (" 2 , 4 - 5 ", 12, (2, 4, 5)),
        ("3", 3, (3,)),
        ("3-3", 3, (3,)),
    ],
)
def test_parse_page_ranges(spec: str, n: int, pages: tuple[int, ...]) -> None:
    assert parse_page_ranges(spec, n) == pages


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("abc", "cannot read 'abc'"),
        ("1,,2", "empty item"),
        ("", "empty item"),
        ("0", "count from 1"),
        ("5-3", "runs backwards"),
        ("-", "no page numbers"),
        ("1-2-3", "cannot read"),
        ("1.5", "cannot read"),
    ],
)
def test_parse_page_ranges_syntax_errors(spec: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_page_ranges(spec, 10)
    assert fragment in info.value.message
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(("spec", "page"), [("11", 11), ("9-12", 12), ("11-", 11), ("-20", 20)])
def test_parse_page_ranges_out_of_range(spec: str, page: int) -> None:
    with pytest.raises(MediaError) as info:
        parse_page_ranges(spec, 10)
    assert f"asks for page {page}, but there are only 10 pages" in info.value.message
    assert info.value.exit_code == EXIT_MEDIA


@pytest.mark.parametrize(
    ("pages", "text"), [([1, 2, 3, 7], "1-3, 7"), ([5], "5"), ([], ""), ([3, 4, 9, 10, 12], "3-4, 9-10, 12")]
)
def test_format_page_ranges(pages: list[int], text: str) -> None:
    assert format_page_ranges(pages) == text


def test_render_size_rounds_up_like_pypdfium2() -> None:
    assert render_size((595.28, 841.89), 2.0) == (1191, 1684)
    assert render_size((0.1, 0.1), 0.5) == (1, 1)


def test_probe_fpdf_document(media: MediaSet) -> None:
    info = probe_pdf(str(media.pdf()), "doc.pdf")
    assert info.n_pages == 3
    portrait, landscape, _ = info.page_sizes
    assert portrait == pytest.approx((595.28, 841.89), abs=0.01)  # A4 in points
    assert landscape == pytest.approx((841.89, 595.28), abs=0.01)


def test_render_at_the_asked_scale_with_text_on_white(media: MediaSet) -> None:
    (page,) = render_pages(str(media.pdf()), "doc.pdf", [1], [0.5])
    assert page.mode == "RGB"
    assert page.size == render_size((595.28, 841.89), 0.5)
    pixels = np.asarray(page)
    assert pixels[-5:, :].min() == 255  # blank margin is white
    assert pixels.min() < 100  # the text is there


def test_pillow_pdf(media: MediaSet) -> None:
    path = str(media.get("pillow.pdf", pillow_pdf))
    info = probe_pdf(path, "pillow.pdf")
    assert info.page_sizes == ((200.0, 100.0), (200.0, 100.0))
    red, blue = render_pages(path, "pillow.pdf", [1, 2], [1.0, 1.0])
    # Pillow stores the pages as JPEG, so allow a little colour drift.
    assert np.abs(np.subtract(red.getpixel((100, 50)), (255, 0, 0))).max() <= 3
    assert np.abs(np.subtract(blue.getpixel((100, 50)), (0, 0, 255))).max() <= 3


def test_rotated_page_sizes_are_as_displayed(media: MediaSet) -> None:
    path = str(media.get("rotated.pdf", lambda p: rotated_pdf(p, media.pdf())))
    info = probe_pdf(path, "rotated.pdf")
    assert info.page_sizes[0] == pytest.approx((841.89, 595.28), abs=0.01)
    (page,) = render_pages(path, "rotated.pdf", [1], [0.25])
    assert page.size == render_size(info.page_sizes[0], 0.25)


def test_encrypted_pdf(media: MediaSet) -> None:
    path = str(media.get("locked.pdf", lambda p: encrypted_pdf(p, media.pdf())))
    with pytest.raises(MediaError) as info:
        probe_pdf(path, "locked.pdf")
    assert info.value.message == "locked.pdf: the PDF is encrypted with a password"
    assert "qpdf --decrypt" in info.value.hint


def test_zero_page_pdf(media: MediaSet) -> None:
    path = str(media.get("empty.pdf", zero_page_pdf))
    with pytest.raises(MediaError, match=r"^empty.pdf: the PDF has no pages"):
        probe_pdf(path, "empty.pdf")


def test_errors_do_not_leak_from_an_earlier_file(media: MediaSet) -> None:
    # PDFium keeps a process-wide last error; a page-less PDF after an encrypted one must not
    # be reported as encrypted.
    locked = str(media.get("locked.pdf", lambda p: encrypted_pdf(p, media.pdf())))
    empty = str(media.get("empty.pdf", zero_page_pdf))
    for path, fragment in [
        (locked, "encrypted"),
        (empty, "no pages"),
        (locked, "encrypted"),
        (empty, "no pages"),
    ]:
        with pytest.raises(MediaError, match=fragment):
            probe_pdf(path, path)


def test_corrupt_pdf(tmp_path) -> None:
    path = tmp_path / "bad.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    with pytest.raises(MediaError, match=r"^bad.pdf: the PDF is corrupt or not a valid PDF$"):
        probe_pdf(str(path), "bad.pdf")
