"""From an input argument to a checked source: which pages or frames it gives, then their parts.

`open_source` does every check that can fail (path, kind, decoding, selections) and decides the
pages or frames to use; nothing is rendered yet. `materialize` then renders or decodes them at
the sizes the planner chose. Tokens and budgets are not this module's business (see
`kimi_cli.plan`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from kimi_cli.errors import MediaError, UsageError
from kimi_cli.media import image as image_mod
from kimi_cli.media import pdf as pdf_mod
from kimi_cli.media import timeline
from kimi_cli.media import video as video_mod
from kimi_cli.media.detect import detect
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import ImagePart, MediaItem, MediaKind, Part, TextPart

#: PDF pages are measured at 144 dpi (twice PDF's 72 points per inch): small print stays legible
#: and an A4 or Letter page costs about 2,500 tokens, under the checkpoint's 4,096 per image.
PDF_REFERENCE_SCALE = 144 / pdf_mod.POINTS_PER_INCH
_PAGE_SUFFIX = re.compile(r"^[\d\s,-]+$")
_ARTICLE = {"image": "an image", "video": "a video", "pdf": "a PDF"}


@dataclass(frozen=True)
class InputSpec:
    """An input argument: the file path and an optional `:1-3,7` page selection after it.

    `name` is how messages call the file (default: `path`); e.g. `stdin` for a temporary copy.
    """

    text: str
    path: str
    pages: str | None = None
    name: str | None = None

    @property
    def shown(self) -> str:
        """The name used in messages."""
        return self.name or self.path


def split_spec(text: str) -> InputSpec:
    """Split `report.pdf:1-3,7` into path and pages; a string naming an existing file is kept whole."""
    if os.path.lexists(text) or ":" not in text:
        return InputSpec(text, text)
    path, _, suffix = text.rpartition(":")
    if path and _PAGE_SUFFIX.match(suffix):
        return InputSpec(text, path, suffix)
    return InputSpec(text, text)


@dataclass(frozen=True)
class Slot:
    """One image a source will give: its label, natural pixel size and where it comes from."""

    label: str | None  # text placed before the image: "Page 3 of 12:" or "[00:01:05]"
    size: tuple[int, int]  # pixels: as decoded, or a PDF page at the reference scale
    index: int  # 1-based page number, or 0-based frame index
    points: tuple[float, float] | None = None  # a PDF page's size in points


@dataclass(frozen=True, eq=False)
class Source:
    """A checked input and the images it will give, in order."""

    spec: InputSpec
    kind: MediaKind
    format: str
    summary: str
    slots: tuple[Slot, ...]
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The file as messages name it."""
        return self.spec.shown


@dataclass(frozen=True)
class Target:
    """The planner's decision for one slot: final pixel size, token cap, PDF render scale."""

    size: tuple[int, int]
    max_tokens: int | None
    scale: float | None = None
    geometry: Any = None  # the processor's plan for an image of `size` (see `ImagePart.geometry`)


def open_source(spec: InputSpec, options: MediaOptions) -> Source:
    """Check one input and choose its pages or frames. Raises `MediaError`/`UsageError`."""
    name = spec.shown
    found = detect(spec.path, name)
    if spec.pages is not None and found.kind != "pdf":
        raise UsageError(
            f"{spec.text}: a page selection only applies to PDFs, and {name} is {_ARTICLE[found.kind]}",
            f"pass {name} without ':{spec.pages}'",
        )
    if found.kind == "pdf":
        return _open_pdf(spec, options)
    if found.kind == "video":
        return _open_video(spec, found.format, options)
    info = image_mod.probe_image(spec.path, name)
    if info.animated:
        return _open_animation(spec, info, options)
    summary = f"{info.format}, {info.size[0]}x{info.size[1]}"
    return Source(spec, "image", info.format, summary, (Slot(None, info.size, 0),), info.notes)


def _open_pdf(spec: InputSpec, options: MediaOptions) -> Source:
    name = spec.shown
    info = pdf_mod.probe_pdf(spec.path, name)
    n = info.n_pages
    selection = spec.pages if spec.pages is not None else options.pages
    notes: list[str] = []
    if selection is not None:
        try:
            pages = pdf_mod.parse_page_ranges(selection, n)
        except (MediaError, UsageError) as exc:
            raise type(exc)(f"{name}: {exc.message}", exc.hint) from None
    else:
        pages = tuple(range(1, min(n, options.max_pages) + 1))
        if n > options.max_pages:
            rest = pdf_mod.format_page_ranges(range(options.max_pages + 1, n + 1))
            notes.append(
                f"{name}: {n} pages, kept 1-{options.max_pages}; pages {rest} left out "
                f"(choose pages with --pages {rest.replace(' ', '')} or {name}:{rest.replace(' ', '')})"
            )
    slots = tuple(
        Slot(
            f"Page {p} of {n}:",
            pdf_mod.render_size(info.page_sizes[p - 1], PDF_REFERENCE_SCALE),
            p,
            info.page_sizes[p - 1],
        )
        for p in pages
    )
    summary = f"PDF, {n} page{'s' if n != 1 else ''}, using {pdf_mod.format_page_ranges(pages)}"
    return Source(spec, "pdf", "PDF", summary, slots, tuple(notes))


def _open_video(spec: InputSpec, fmt: str, options: MediaOptions) -> Source:
    name = spec.shown
    info = video_mod.probe_video(spec.path, name)
    slots, notes = _sample(name, info.starts.tolist(), info.duration, info.size, options)
    notes = info.notes + notes
    summary = (
        f"{fmt}, {timeline.format_timestamp(info.duration, 1)} long, {info.fps:.4g} fps, "
        f"{info.size[0]}x{info.size[1]}, {info.n_frames} frames"
    )
    return Source(spec, "video", fmt, summary, slots, notes)


def _open_animation(spec: InputSpec, info: image_mod.ImageInfo, options: MediaOptions) -> Source:
    slots, notes = _sample(spec.shown, info.starts, info.duration, info.size, options)
    image_mod.check_composite(spec.shown, info, max(slot.index for slot in slots))
    summary = (
        f"animated {info.format}, {timeline.format_timestamp(info.duration, 1)} long, "
        f"{info.size[0]}x{info.size[1]}, {len(info.starts)} frames"
    )
    return Source(spec, "animation", info.format, summary, slots, info.notes + notes)


def _sample(
    name: str, starts: Sequence[float], duration: float, size: tuple[int, int], options: MediaOptions
) -> tuple[tuple[Slot, ...], tuple[str, ...]]:
    """Frames at `options.fps` within the range, at most `options.max_frames`, with notes."""
    notes: list[str] = []
    start, end = 0.0, duration
    if options.range is not None:
        start, end, clamped = timeline.clamp_range(name, options.range, duration)
        notes += [clamped] if clamped else []
    times = timeline.sample_times(start, end, options.fps, options.max_frames)
    wanted = timeline.frames_wanted(end - start, options.fps)
    if wanted > options.max_frames:
        notes.append(
            f"{name}: {timeline.format_timestamp(end - start, 1)} at {options.fps:g} fps would be {wanted} "
            f"frames; took {options.max_frames} evenly spaced, one every {(end - start) / options.max_frames:.1f} s "
            f"(raise --max-frames or narrow --range for more)"
        )
    step = times[1] - times[0] if len(times) > 1 else 1.0
    indices = timeline.frames_at(starts, times)
    labels = timeline.distinct_labels([starts[i] for i in indices], timeline.timestamp_decimals(step))
    slots = tuple(Slot(f"[{label}]", size, i) for i, label in zip(indices, labels, strict=True) if label)
    return slots, tuple(notes)


def materialize(source: Source, targets: Sequence[Target], notes: Sequence[str] | None = None) -> MediaItem:
    """Render or decode the source's slots at their `targets` and return the finished item.

    `notes` (default: the source's own) are carried into the item, plus any about frames that
    failed to decode.
    """
    if len(targets) != len(source.slots):
        raise ValueError(f"{len(targets)} targets for {len(source.slots)} slots")
    extra: list[str] = []
    images: list[Image.Image | None]
    if source.kind == "image":
        images = [image_mod.load_still(source.spec.path, source.name, targets[0].size)]
    elif source.kind == "pdf":
        scales = [t.scale or PDF_REFERENCE_SCALE for t in targets]
        images = list(
            pdf_mod.render_pages(source.spec.path, source.name, [s.index for s in source.slots], scales)
        )
    elif source.kind == "animation":
        size = targets[0].size if targets else None
        images = list(image_mod.load_frames(source.spec.path, source.name, [s.index for s in source.slots], size))
    else:
        images, extra = _decode_video(source, targets)
    parts: list[Part] = []
    for slot, target, picture in zip(source.slots, targets, images, strict=True):
        if picture is None:
            continue
        if picture.size != target.size:
            picture = picture.resize(target.size, Image.Resampling.BICUBIC)
        if slot.label is not None:
            parts.append(TextPart(slot.label))
        parts.append(ImagePart(picture, source.name, target.max_tokens, target.geometry))
    kept = source.notes if notes is None else tuple(notes)
    return MediaItem(source.name, source.kind, tuple(parts), kept + tuple(extra))


def _decode_video(source: Source, targets: Sequence[Target]) -> tuple[list[Image.Image | None], list[str]]:
    # Every frame of one video gets the same target, so the decoder can scale them all at once.
    size = targets[0].size if targets else None
    indices = [s.index for s in source.slots]
    decoded, failed = video_mod.read_frames(source.spec.path, source.name, indices, size)
    by_index = dict(decoded)
    notes = []
    if failed:
        labels = ", ".join(s.label or str(s.index) for s in source.slots if s.index in set(failed))
        notes.append(f"{source.name}: {len(failed)} frame(s) could not be decoded and were skipped: {labels}")
    return [by_index.get(i) for i in indices], notes
