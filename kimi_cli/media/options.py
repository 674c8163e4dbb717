"""How inputs are read: page and frame selection and the visual-token budget, with their defaults.

One frozen value built by the CLI from its flags (`--pages --fps --max-frames --range
--max-image-tokens`) and checked on construction, so bad flags fail before any file is opened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kimi_cli.errors import UsageError
from kimi_cli.media.timeline import TimeRange, parse_time_range

#: Image tokens for all inputs of one prompt. Kimi-VL's context is 128K tokens and the thinking
#: model is given up to 32K for its reply; 16K image tokens is 4 full-resolution images (4096
#: each), 32 video frames of 512 or 20 PDF pages of 819, and keeps prefill time and attention
#: memory moderate on one GPU. `--max-image-tokens` raises it up to what the context allows.
DEFAULT_MAX_IMAGE_TOKENS = 16384
#: Upper bound for `--max-image-tokens`: the 131072-token context minus 32768 for the reply.
MAX_IMAGE_TOKENS_LIMIT = 131072 - 32768
#: An image below 64 tokens (8x8 merged patches, about 224x224 pixels) shows too little to use.
MIN_IMAGE_TOKENS = 64
#: Pages read from a PDF when no selection is given; more are listed as left out.
DEFAULT_MAX_PAGES = 20
#: One frame per second follows most actions in ordinary footage; slides and screencasts need less.
DEFAULT_FPS = 1.0
#: 32 frames at 512 tokens fill the default budget exactly; longer clips are sampled evenly.
DEFAULT_MAX_FRAMES = 32
#: Beyond this a clip is sampled faster than any common frame rate.
MAX_FPS = 120.0


@dataclass(frozen=True)
class MediaOptions:
    """Options for reading inputs; `pages` and `time_range` are the raw `--pages`/`--range` text."""

    pages: str | None = None
    max_pages: int = DEFAULT_MAX_PAGES
    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    time_range: str | None = None
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= MAX_FPS):
            raise UsageError(f"--fps {self.fps:g}: must be above 0 and at most {MAX_FPS:g}", "e.g. --fps 0.5")
        if self.max_frames < 1:
            raise UsageError(f"--max-frames {self.max_frames}: must be at least 1", "e.g. --max-frames 16")
        if self.max_pages < 1:
            raise UsageError(f"max pages {self.max_pages}: must be at least 1", "e.g. 20")
        if not MIN_IMAGE_TOKENS <= self.max_image_tokens <= MAX_IMAGE_TOKENS_LIMIT:
            raise UsageError(
                f"--max-image-tokens {self.max_image_tokens}: must be between {MIN_IMAGE_TOKENS} "
                f"and {MAX_IMAGE_TOKENS_LIMIT}",
                f"the default is {DEFAULT_MAX_IMAGE_TOKENS}",
            )
        if self.pages is not None and not self.pages.strip():
            raise UsageError("--pages: empty selection", "e.g. --pages 1-3,7")
        self.range  # parse now so that a bad --range fails before any file is read  # noqa: B018

    @classmethod
    def from_flags(cls, **flags: object) -> MediaOptions:
        """Options from CLI flags, where None means "not given": the default is used."""
        return cls(**{key: value for key, value in flags.items() if value is not None})  # type: ignore[arg-type]

    @property
    def range(self) -> TimeRange | None:
        """The parsed `--range`, or None for the whole clip."""
        return None if self.time_range is None else parse_time_range(self.time_range)
