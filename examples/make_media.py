"""Regenerate examples/report.pdf and examples/clip.mp4 (made by this project; same licence as kimi).

    python examples/make_media.py    # needs the test extra: fpdf2, imageio-ffmpeg
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_pdf(path: Path) -> None:
    """A three-page report written with fpdf2: a title page, a table and a chart page."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=14)
    pdf.add_page()
    pdf.cell(0, 12, "Quarterly report: coffee consumption", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 8, "The office drank 1,240 cups of coffee this quarter, 18% more than last quarter. "
                   "Espresso overtook filter coffee in March.")
    pdf.add_page()
    rows = [("Month", "Filter", "Espresso"), ("January", "210", "150"), ("February", "190", "205"),
            ("March", "170", "315")]
    for row in rows:
        for cell in row:
            pdf.cell(50, 10, cell, border=1)
        pdf.ln()
    pdf.add_page()
    pdf.cell(0, 10, "Cups per month (espresso)", new_x="LMARGIN", new_y="NEXT")
    for i, value in enumerate((150, 205, 315)):
        pdf.rect(30 + 40 * i, 200 - value / 2, 25, value / 2, style="F")
    pdf.output(str(path))


def make_video(path: Path) -> None:
    """Four seconds, 320x240, 10 fps, H.264: a red square crossing a blue background."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    filters = "color=c=blue:s=320x240:d=4:r=10[bg];color=c=red:s=60x60:d=4:r=10[fg];" \
              "[bg][fg]overlay=x='t*65':y=90"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-filter_complex", filters, "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-t", "4", str(path)], check=True)


if __name__ == "__main__":
    make_pdf(HERE / "report.pdf")
    make_video(HERE / "clip.mp4")
