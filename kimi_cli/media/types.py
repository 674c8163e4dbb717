"""Typed media: what files become before the model sees them. Pure values, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

MediaKind = Literal["image", "pdf", "video", "animation"]


@dataclass(frozen=True)
class TextPart:
    """Text placed in the user turn, e.g. `Page 3 of 12:` or a video timestamp `[00:01:05]`."""

    text: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """One image as the model will see it (a photo, a PDF page, a video frame).

    `max_tokens` caps the image's LLM tokens (a budget decided by the planner); `None` means the
    checkpoint's own limit (2506: 4096 tokens = 16384 patches). `geometry` is the planner's
    `model.image_processor.ImageGeometry` for this image (resize, padding, patch grid, tokens),
    which preprocessing reuses instead of deciding again; None for images made elsewhere.
    """

    image: Image.Image
    source: str
    max_tokens: int | None = None
    geometry: Any = None


Part = TextPart | ImagePart


@dataclass(frozen=True)
class MediaItem:
    """One input file after loading: its parts in order, and notes on what was changed or left out."""

    path: str
    kind: MediaKind
    parts: tuple[Part, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
