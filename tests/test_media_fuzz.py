"""Seeded fuzzing of the loaders: mutants of real files must plan and load, or fail in one line.

Seeds are real files written at test time (PNG, JPEG, GIF, TIFF, APNG, animated WebP, PDF,
MP4, WebM). Each mutant (bytes flipped, headers overwritten with boundary values, slices cut,
zeroed or repeated) goes through `make_plan` and `load_plan` as the CLI calls them. It must end in success or a
`KimiError` whose message and hint are one line each: never another exception, a hang or a
crash. `KIMI_FUZZ_MUTANTS` raises the count (default 240), `KIMI_FUZZ_SEED` changes the seed;
a failure names the seed and the mutant's index, and `KIMI_FUZZ_KEEP=DIR` keeps the mutants.
"""

from __future__ import annotations

import faulthandler
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_fixtures import gif_frames, noisy_jpeg
from media_fixtures import encode_video, fpdf_document, noise_png
from PIL import Image

from kimi_cli.errors import KimiError
from kimi_cli.media.options import MediaOptions
from kimi_cli.plan import load_plan, make_plan

SEED = int(os.environ.get("KIMI_FUZZ_SEED", "20260901"))
MUTANTS = int(os.environ.get("KIMI_FUZZ_MUTANTS", "240"))
#: A mutant that takes longer than this is a hang: dump every thread's stack and stop the run.
HANG_S = 60
_BOUNDARY = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _tiff(path: Path) -> Path:
    Image.new("RGB", (48, 32), (30, 160, 90)).save(path, compression="tiff_adobe_deflate")
    return path


def _animated(fmt: str) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        frames = [Image.new("RGB", (24, 16), (90 * i, 30, 200)) for i in range(3)]
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=[40, 80, 120])
        return path

    return build


SEEDS: dict[str, Callable[[Path], Path]] = {
    "png": lambda p: noise_png(p, (48, 32)),
    "jpg": lambda p: noisy_jpeg(p, (64, 48)),
    "gif": lambda p: gif_frames(p, 6),
    "tif": _tiff,
    "apng": _animated("PNG"),
    "awebp": _animated("WEBP"),
    "pdf": lambda p: fpdf_document(p, 2),
    "mp4": lambda p: encode_video(p, "libx264", seconds=1.0, size="32x24"),
    "webm": lambda p: encode_video(p, "libvpx-vp9", seconds=1.0, size="32x24"),
}
#: Videos cost a child process or two each; images and PDFs are cheap, so they get more mutants.
WEIGHTS = {"png": 3, "jpg": 3, "gif": 3, "tif": 3, "apng": 2, "awebp": 2, "pdf": 3, "mp4": 1, "webm": 1}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutant of `data` (pure given `rng`)."""
    out = bytearray(data)
    # Headers live near the start: aim there half of the time.
    def spot() -> int:
        span = min(len(out), 512) if rng.random() < 0.5 else len(out)
        return rng.randrange(max(1, span))

    strategy = rng.randrange(6)
    if strategy == 0:
        for _ in range(rng.randint(1, 8)):
            out[spot()] = rng.randrange(256)
    elif strategy == 1:
        del out[rng.randint(1, max(1, len(out) - 1)):]
    elif strategy == 2:
        at, value = spot(), rng.choice(_BOUNDARY)
        out[at : at + 4] = value.to_bytes(4, rng.choice(["big", "little"]))
    elif strategy == 3:
        at = spot()
        out[at : at + rng.randint(1, 256)] = bytes(rng.randint(1, 256))
    elif strategy == 4:
        at = spot()
        piece = out[at : at + rng.randint(1, 512)]
        out[at:at] = piece * rng.randint(1, 8)
    else:
        at = spot()
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return bytes(out)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz-seeds")
    return {kind: build(root / f"seed.{kind}").read_bytes() for kind, build in SEEDS.items()}


def _schedule(count: int, rng: random.Random) -> list[str]:
    kinds = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
    return [rng.choice(kinds) for _ in range(count)]


def _outcome(path: Path) -> str | None:
    """None when the mutant ended well; else what went wrong."""
    try:
        load_plan(make_plan([str(path)], MediaOptions(max_frames=4)))
    except KimiError as exc:
        if "\n" in exc.message or (exc.hint and "\n" in exc.hint):
            return f"a message of several lines: {exc.message!r} / {exc.hint!r}"
        if not exc.message.startswith(str(path)) and exc.exit_code == 3:
            return f"a message that does not name the file: {exc.message!r}"
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.mark.slow
def test_mutants_plan_or_fail_in_one_line(seeds: dict[str, bytes], tmp_path) -> None:
    rng = random.Random(SEED)
    keep = os.environ.get("KIMI_FUZZ_KEEP")
    failures: list[str] = []
    for index, kind in enumerate(_schedule(MUTANTS, rng)):
        path = tmp_path / f"mutant-{index}.{kind}"
        path.write_bytes(mutate(seeds[kind], rng))
        faulthandler.dump_traceback_later(HANG_S, exit=True)
        try:
            problem = _outcome(path)
        finally:
            faulthandler.cancel_dump_traceback_later()
        if problem:
            failures.append(f"seed {SEED} mutant {index} ({kind}): {problem}")
        if keep:
            shutil.copy(path, Path(keep) / path.name)
        path.unlink()
    assert not failures, "\n".join(failures)


def test_a_few_mutants_of_each_kind(seeds: dict[str, bytes], tmp_path) -> None:
    """The quick subset's share: three mutants of every seed, the same ones every run."""
    rng = random.Random(SEED + 1)
    failures = []
    for kind in SEEDS:
        for index in range(3):
            path = tmp_path / f"quick-{index}.{kind}"
            path.write_bytes(mutate(seeds[kind], rng))
            problem = _outcome(path)
            if problem:
                failures.append(f"{kind} {index}: {problem}")
    assert not failures, "\n".join(failures)


def test_mutate_is_deterministic_for_a_seed() -> None:
    data = bytes(range(256)) * 8
    first = [mutate(data, random.Random(5)) for _ in range(3)]
    assert first == [mutate(data, random.Random(5)) for _ in range(3)]
    assert any(m != data for m in first)
