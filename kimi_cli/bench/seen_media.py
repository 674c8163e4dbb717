"""The inputs of the user-seen speed benchmark, written by the bench itself with runtime dependencies only.

A PDF of dense text pages (pypdfium2 writes it: each page one rendered bitmap) and, when the repository's
`examples/clip.mp4` is not at hand, an animated GIF (Pillow writes it; the planner samples an animation's
frames like a video's, with timestamps). decord reads video but cannot write it.
"""

from __future__ import annotations

from pathlib import Path

#: US Letter in PDF points: at the planner's reference scale a page asks for more than the budget's
#: share, so 20 pages at the default 16384-token budget plan 800 tokens each (about 16.2K prompt tokens).
PAGE_POINTS = (612, 792)
#: `examples/clip.mp4`: 4 s, 10 fps, 320x240; at 5 fps it plans 20 frames of 108 tokens (about 2.4K prompt).
CLIP = Path(__file__).resolve().parents[2] / "examples" / "clip.mp4"
GIF_SIZE, GIF_SECONDS, GIF_FPS = (320, 240), 4, 10
_LINE = ("{page}.{line} Quarterly figures: revenue 1,240 (+18%), costs 973, margin 21.5%; "
         "espresso overtook filter coffee in March. ")


def page_image(number: int, scale: float = 2.0) -> object:
    """One page of dense text (two columns of numbered lines), as a greyscale PIL image."""
    from PIL import Image, ImageDraw

    width, height = (round(side * scale) for side in PAGE_POINTS)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    draw.text((60, 30), f"Report, page {number}", fill=0)
    for line in range((height - 90) // 14):
        text = _LINE.format(page=number, line=line + 1)
        draw.text((60, 60 + 14 * line), text[:60], fill=0)
        draw.text((width // 2 + 20, 60 + 14 * line), text[60:] + text[:20], fill=0)
    return image


def write_pdf(folder: Path, pages: int) -> Path:
    """A PDF of `pages` Letter pages of dense text, written with pypdfium2; returns its path."""
    import pypdfium2 as pdfium

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{pages}-pages.pdf"
    if path.exists():
        return path
    pdf = pdfium.PdfDocument.new()
    try:
        for number in range(1, pages + 1):
            page = pdf.new_page(*PAGE_POINTS)
            picture = pdfium.PdfImage.new(pdf)
            picture.set_bitmap(pdfium.PdfBitmap.from_pil(page_image(number)))
            picture.set_matrix(pdfium.PdfMatrix().scale(*PAGE_POINTS))
            page.insert_obj(picture)
            page.gen_content()
            page.close()
        pdf.save(str(path))
    finally:
        pdf.close()
    return path


def write_gif(folder: Path) -> Path:
    """An animated GIF shaped like `examples/clip.mp4` (a red square crossing a blue field)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench-clip.gif"
    frames = []
    for i in range(GIF_SECONDS * GIF_FPS):
        frame = Image.new("RGB", GIF_SIZE, (0, 0, 255))
        left = round(i / GIF_FPS * 65)
        ImageDraw.Draw(frame).rectangle((left, 90, left + 60, 150), fill=(255, 0, 0))
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=1000 // GIF_FPS, loop=0)
    return path


def video_input(folder: Path) -> tuple[Path, str]:
    """The clip to ask about and how the report names it: `examples/clip.mp4`, else a written GIF."""
    if CLIP.is_file():
        return CLIP, "examples/clip.mp4 (decord)"
    return write_gif(folder), "animated GIF written by the bench (examples/clip.mp4 not found; frames sampled as video)"
