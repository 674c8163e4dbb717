"""Real media files for the media tests, written at test time by real writers and encoders.

PDFs come from fpdf2, Pillow and pikepdf; videos from the ffmpeg binary shipped by
imageio-ffmpeg; images from Pillow (and ffmpeg for 16-bit RGB). `MediaSet` builds each file on
first use and caches it, so a test module pays only for what it touches.
"""

from __future__ import annotations

import os
import pickle
import shutil
import struct
import subprocess
import tempfile
import wave
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Luminance of frame N in the test videos is 16 + 7N (limited range), so the RGB mean of a
#: decoded frame tells which frame it is: (7N) * 255 / 219.
LUMA_STEP_RGB = 7 * 255 / 219
VIDEO_FPS = 10
VIDEO_SECONDS = 3


def ffmpeg_exe() -> str | None:
    """The ffmpeg binary from imageio-ffmpeg, or None when the test extra is missing."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def frame_number(image: Image.Image) -> int:
    """Which frame of a `luma` test video this decoded image is."""
    return round(float(np.asarray(image.convert("L"), dtype=np.float64).mean()) / LUMA_STEP_RGB)


def run_ffmpeg(*args: str) -> None:
    """Run imageio-ffmpeg's ffmpeg quietly with `args`; skip the test when the extra is missing."""
    exe = ffmpeg_exe()
    if exe is None:
        import pytest

        pytest.skip("imageio-ffmpeg (test extra) is not installed")
    subprocess.run([exe, "-y", "-loglevel", "error", *args], check=True, capture_output=True)


def encode_video(path: Path, codec: str, seconds: float = VIDEO_SECONDS, size: str = "64x48") -> Path:
    """A clip whose frame N has luminance 16 + 7N, encoded with `codec` into `path`'s container."""
    source = f"nullsrc=size={size}:rate={VIDEO_FPS}:duration={seconds},geq=lum='16+N*7':cb=128:cr=128"
    extra = {
        "libx264": ["-pix_fmt", "yuv420p"],
        "libaom-av1": ["-cpu-used", "8"],
        "libvpx-vp9": ["-b:v", "200k"],
    }
    run_ffmpeg("-f", "lavfi", "-i", source, "-c:v", codec, *extra.get(codec, []), str(path))
    return path


def zero_frame_video(path: Path, codec: str) -> Path:
    """A container with a video stream header and no frames."""
    source = f"testsrc=size=64x48:rate={VIDEO_FPS}:duration=1"
    run_ffmpeg("-f", "lavfi", "-i", source, "-frames:v", "0", "-c:v", codec, str(path))
    return path


def audio_only_mp4(path: Path) -> Path:
    """An MP4 (brand isom) holding only an AAC track."""
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", "-f", "mp4", str(path))
    return path


def fpdf_document(path: Path, pages: int = 3) -> Path:
    """A text PDF from fpdf2: A4 portrait pages, the second one landscape."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=28)
    for number in range(1, pages + 1):
        pdf.add_page(orientation="L" if number == 2 else "P")
        pdf.cell(text=f"Page number {number}")
    pdf.output(str(path))
    return path


def pillow_pdf(path: Path) -> Path:
    """A two-page PDF saved by Pillow (images as pages), 200x100 points each."""
    first = Image.new("RGB", (200, 100), (255, 0, 0))
    second = Image.new("RGB", (200, 100), (0, 0, 255))
    first.save(path, "PDF", resolution=72.0, save_all=True, append_images=[second])
    return path


def encrypted_pdf(path: Path, source: Path) -> Path:
    """`source` saved by pikepdf with a user password (AES-256)."""
    import pikepdf

    with pikepdf.open(source) as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(owner="owner", user="secret"))
    return path


def zero_page_pdf(path: Path) -> Path:
    """A syntactically valid PDF whose page tree is empty (pikepdf)."""
    import pikepdf

    pikepdf.new().save(path)
    return path


def rotated_pdf(path: Path, source: Path) -> Path:
    """`source` with /Rotate 90 on its first page (pikepdf)."""
    import pikepdf

    with pikepdf.open(source) as pdf:
        pdf.pages[0].Rotate = 90
        pdf.save(path)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 40x20 JPEG, left half red and right half blue, tagged EXIF orientation 6 (turn 90° CW)."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", exif=exif, quality=95)
    return path


def png_with_dimensions(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares `width` x `height` (a decompression bomb when huge)."""
    Image.new("L", (8, 8)).save(path, "PNG")
    data = bytearray(path.read_bytes())
    # IHDR starts at byte 8: length (4), "IHDR" (4), width, height, ...; then the CRC of type+data.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def noise_png(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    """A PNG of random pixels (so it does not compress to nothing)."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, "PNG")
    return path


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    """The first `keep` fraction of `source`'s bytes."""
    data = source.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def animated_gif(path: Path, durations_ms: tuple[int, ...] = (100, 200, 300, 400)) -> Path:
    """A GIF with one flat colour per frame and the given frame durations."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    frames = [Image.new("RGB", (32, 24), colours[i % len(colours)]) for i in range(len(durations_ms))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations_ms), loop=0)
    return path


def wav_file(path: Path) -> Path:
    """A short silent WAV written by the standard library."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)
    return path


def zip_file(path: Path) -> Path:
    """A ZIP archive holding one text file."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return path


class MediaSet:
    """Lazily built, cached media files in one directory (use one per test session)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def get(self, name: str, build: Callable[[Path], Any]) -> Path:
        """The file `name`, built by `build(path)` the first time it is asked for."""
        if name not in self._built:
            path = self.root / name
            build(path)
            self._built[name] = path
        return self._built[name]

    def pdf(self) -> Path:
        """A 3-page fpdf2 document."""
        return self.get("doc.pdf", fpdf_document)

    def video(self, name: str = "clip.mp4", codec: str = "libx264") -> Path:
        """A 3-second, 10 fps, 64x48 luma-coded clip."""
        return self.get(name, lambda p: encode_video(p, codec))


def run_unprivileged(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn(*args)` as user `nobody` in a forked child (root reads any file regardless of its
    mode, so a permission test must drop root); returns its result or re-raises its KimiError
    as (class name, message, hint, exit code)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome: Any = ("ok", fn(*args))
        except Exception as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = (
                "error",
                (type(exc).__name__, str(exc), getattr(exc, "hint", None), getattr(exc, "exit_code", None)),
            )
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(outcome, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as incoming:
        outcome = pickle.load(incoming)
    os.waitpid(pid, 0)
    return outcome


def unreadable_file() -> tuple[Path, Callable[[], None]]:
    """A PNG with mode 000 in a directory others may traverse, and a cleanup function."""
    folder = Path(tempfile.mkdtemp(prefix="kimi-media-"))
    folder.chmod(0o711)
    path = noise_png(folder / "secret.png")
    path.chmod(0)
    return path, lambda: shutil.rmtree(folder, ignore_errors=True)
