"""Crafted hostile media, made at test time from real files: each one broke kimi once (issue 9).

Every builder takes the path to write and returns it. They patch real encoders' output the way
a fuzzer or an attacker would (a header field, a count, a cut), so no binary is committed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from media_fixtures import encode_video, run_ffmpeg
from PIL import Image


def stts_bomb(path: Path, codec: str = "libx264") -> Path:
    """A clip whose `stts` box claims 0x7FFFFFFF samples (decord: std::bad_alloc, SIGABRT)."""
    encode_video(path, codec)
    data = bytearray(path.read_bytes())
    at = data.find(b"stts")
    # version/flags (4) and entry count (4), then the first entry's sample count.
    data[at + 12 : at + 16] = struct.pack(">I", 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    return path


def short_mpeg_ts(path: Path) -> Path:
    """A plain libx264 encode into MPEG-TS: 3 s with B-frames (decord cannot seek back in it)."""
    return encode_video(path, "libx264")


def gif_on_canvas(path: Path, frames: int, canvas: tuple[int, int], frame: tuple[int, int] = (2, 2)) -> Path:
    """`frames` tiny alternating frames whose logical screen claims `canvas` (a few KB in all)."""
    images = [Image.new("P", frame, i % 2) for i in range(frames)]
    for image in images:
        image.putpalette([255, 0, 0, 0, 0, 255])
    images[0].save(path, save_all=True, append_images=images[1:], duration=50, loop=0, disposal=1)
    data = bytearray(path.read_bytes())
    data[6:10] = struct.pack("<HH", *canvas)
    path.write_bytes(bytes(data))
    return path


def flat_png(path: Path, width: int, height: int, bits: int = 16) -> Path:
    """A grey PNG of `width` x `height` written row by row (a huge image, a tiny file, little RAM)."""
    depth_bytes = bits // 8
    header = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x10" * (width * depth_bytes)  # filter byte, then mid-dark grey
    chunks = [packer.compress(row) for _ in range(height)]
    body = b"".join(chunks) + packer.flush()
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        for kind, payload in ((b"IHDR", header), (b"IDAT", body), (b"IEND", b"")):
            out.write(struct.pack(">I", len(payload)) + kind + payload)
            out.write(struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return path


def float_tiff(path: Path, size: int = 3000) -> Path:
    """A 32-bit float grey TIFF, deflate-compressed (big when decoded, small on disk)."""
    Image.new("F", (size, size), 0.25).save(path, compression="tiff_adobe_deflate")
    return path


def noisy_jpeg(path: Path, size: tuple[int, int] = (640, 427)) -> Path:
    """A photo-like JPEG (noise, so its data is not tiny)."""
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, quality=60)
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A 640x427 JPEG whose SOF header claims `width` x `height`."""
    noisy_jpeg(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def tiff_claiming_rows(path: Path, rows: int = 65535) -> Path:
    """A 160x120 uncompressed TIFF whose ImageLength tag says `rows`."""
    pixels = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    data = bytearray(path.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag == 257:
            struct.pack_into("<H" if kind == 3 else "<I", data, entry + 8, rows)
    path.write_bytes(bytes(data))
    return path


def cut(path: Path, build: Callable[[Path], Path], keep: float) -> Path:
    """The first `keep` of the file `build` writes (next to `path`)."""
    whole = build(path.with_name("whole-" + path.name))
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def long_clip(codec: str, seconds: float = 5.6) -> Callable[[Path], Path]:
    """A builder of a `seconds`-long luma clip in `codec` (container from the path)."""
    return lambda p: encode_video(p, codec, seconds=seconds)


def gif_frames(path: Path, count: int = 15) -> Path:
    """A 15-frame 32x24 GIF, 100 ms a frame."""
    frames = [Image.new("RGB", (32, 24), (i * 15, 40, 200 - i * 10)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def mpeg2_program(path: Path, seconds: float = 0.3) -> Path:
    """An MPEG-2 program stream (.mpg), whose first frames decord reports without times."""
    return encode_video(path, "mpeg2video", seconds=seconds)


def libtiff_noise(path: Path) -> Path:
    """A deflate TIFF with an unknown private tag, which libtiff warns about on its own stderr."""
    image = Image.new("RGB", (64, 48), (20, 120, 220))
    info = {65000: "private"}
    image.save(path, compression="tiff_adobe_deflate", tiffinfo=info)
    return path


def ffmpeg_webm(path: Path) -> Path:
    """A VP9 WebM, 5.6 s."""
    run_ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=5.6", "-c:v", "libvpx-vp9",
               "-b:v", "100k", str(path))
    return path
