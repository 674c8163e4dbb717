"""PDFs with pypdfium2: page selection (pure), page sizes, and rendering at a chosen scale.

pypdfium2 is imported inside the functions that use it so that `kimi --help` stays fast.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image

from kimi_cli.errors import MediaError, UsageError

#: PDF user space units per inch.
POINTS_PER_INCH = 72.0
_RANGE_ITEM = re.compile(r"^(\d*)\s*-\s*(\d*)$|^(\d+)$")
PAGES_EXAMPLE = "e.g. --pages 1-3,7 or report.pdf:5- (pages count from 1)"

# PDFium's FPDF_ERR_* load error codes.
_ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 3, 4, 5


@dataclass(frozen=True)
class PdfInfo:
    """A PDF's page count and each page's size in points, as displayed (rotation applied)."""

    page_sizes: tuple[tuple[float, float], ...]

    @property
    def n_pages(self) -> int:
        """Number of pages."""
        return len(self.page_sizes)


def parse_page_ranges(spec: str, n_pages: int) -> tuple[int, ...]:
    """1-based page numbers from `1-3,7`, `5-` (to the end) or `-3` (from the start) (pure).

    Pages come back in the order written, without repeats. Syntax errors raise `UsageError`;
    pages past `n_pages` raise `MediaError` (the selection does not fit this file).
    """
    pages: list[int] = []
    seen: set[int] = set()
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise UsageError(f"page selection {spec!r}: empty item", PAGES_EXAMPLE)
    for item in items:
        first, last = _parse_item(item, spec, n_pages)
        if first > n_pages or last > n_pages:
            raise MediaError(
                f"page selection {spec!r} asks for page {max(first, last)}, but there "
                f"{'is only 1 page' if n_pages == 1 else f'are only {n_pages} pages'}",
                f"choose pages between 1 and {n_pages}",
            )
        fresh = [p for p in range(first, last + 1) if p not in seen]
        pages.extend(fresh)
        seen.update(fresh)
    return tuple(pages)


def _parse_item(item: str, spec: str, n_pages: int) -> tuple[int, int]:
    match = _RANGE_ITEM.match(item)
    if not match:
        raise UsageError(f"page selection {spec!r}: cannot read {item!r}", PAGES_EXAMPLE)
    low, high, single = match.groups()
    if single is not None:
        first = last = int(single)
    elif not low and not high:
        raise UsageError(f"page selection {spec!r}: {item!r} has no page numbers", PAGES_EXAMPLE)
    else:
        first = int(low) if low else 1
        last = int(high) if high else max(n_pages, first)
    if first < 1 or last < 1:
        raise UsageError(f"page selection {spec!r}: pages count from 1", PAGES_EXAMPLE)
    if last < first:
        raise UsageError(f"page selection {spec!r}: {item!r} runs backwards", f"write it as {last}-{first}")
    return first, last


def format_page_ranges(pages: Iterable[int]) -> str:
    """`[1, 2, 3, 7, 9, 10]` -> `1-3, 7, 9-10` (pure)."""
    runs: list[list[int]] = []
    for page in pages:
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        else:
            runs.append([page, page])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def render_size(page_size: tuple[float, float], scale: float) -> tuple[int, int]:
    """Pixel size of a page rendered at `scale` pixels per point (pypdfium2 rounds up)."""
    width, height = page_size
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def probe_pdf(path: str, name: str) -> PdfInfo:
    """Open the PDF and read its page sizes without rendering anything.

    Raises a one-line `MediaError` for an encrypted, corrupt or empty PDF.
    """
    document = _open(path, name)
    try:
        sizes = tuple(_page_size(document, i, name) for i in range(len(document)))
    finally:
        document.close()
    if not sizes:
        raise MediaError(f"{name}: the PDF has no pages", "check the file; re-export it from its source")
    return PdfInfo(sizes)


def render_pages(path: str, name: str, pages: Sequence[int], scales: Sequence[float]) -> list[Image.Image]:
    """Render 1-based `pages` at `scales` (pixels per point) as RGB images on white."""
    document = _open(path, name)
    images: list[Image.Image] = []
    try:
        for number, scale in zip(pages, scales, strict=True):
            images.append(_render(document, number, scale, name))
    finally:
        document.close()
    return images


def _render(document: object, number: int, scale: float, name: str) -> Image.Image:
    import pypdfium2

    try:
        page = document[number - 1]  # type: ignore[index]
        try:
            # The default fill is opaque white, so transparent pages come out on white.
            return page.render(scale=scale, may_draw_forms=True).to_pil().convert("RGB")
        finally:
            page.close()
    except pypdfium2.PdfiumError as exc:
        raise MediaError(
            f"{name}: page {number} cannot be rendered ({exc})", "the PDF may be damaged"
        ) from None


def _page_size(document: object, index: int, name: str) -> tuple[float, float]:
    import pypdfium2

    try:
        width, height = document.get_page_size(index)  # type: ignore[attr-defined]
    except pypdfium2.PdfiumError:
        raise MediaError(
            f"{name}: page {index + 1} is damaged", "the PDF may be corrupt; re-export it"
        ) from None
    if not (width > 0 and height > 0):
        raise MediaError(
            f"{name}: page {index + 1} has no area ({width}x{height} pt)", "the PDF may be corrupt"
        )
    return float(width), float(height)


def _open(path: str, name: str) -> object:
    import pypdfium2

    _reset_last_error()
    try:
        return pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as exc:
        raise _load_error(name, getattr(exc, "err_code", None)) from None
    except OSError as exc:
        raise MediaError(f"{name}: cannot read the PDF ({exc.strerror or exc})", "check the file") from None


def _reset_last_error() -> None:
    """Make PDFium's last-error code start at "file error" before a load.

    PDFium keeps one process-wide last error and does not set it for every failure (a document
    without pages fails silently), so a stale code from an earlier file could be reported. A
    load of the empty path always fails with a file error; since our file is known to be
    readable, a file error after the real load means "no error was recorded".
    """
    import pypdfium2.raw as pdfium_c

    pdfium_c.FPDF_LoadDocument(b"", None)


def _load_error(name: str, code: int | None) -> MediaError:
    if code == _ERR_PASSWORD:
        return MediaError(
            f"{name}: the PDF is encrypted with a password",
            "save an unlocked copy, e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf",
        )
    if code == _ERR_SECURITY:
        return MediaError(
            f"{name}: the PDF uses an unsupported security scheme", "save an unlocked copy first"
        )
    if code == _ERR_FORMAT:
        return MediaError(
            f"{name}: the PDF is corrupt or not a valid PDF",
            "open it in a PDF viewer to check; re-export or re-download it",
        )
    # No error recorded (see `_reset_last_error`): PDFium refuses a document without pages so.
    return MediaError(
        f"{name}: the PDF has no pages (or no readable page tree)",
        "open it in a PDF viewer to check; re-export it from its source",
    )
