"""Plan a prompt's inputs before any model loads: what each file gives and what it costs.

`make_plan` checks every input (path, kind, decoding, selections) and shares the visual-token
budget (`--max-image-tokens`) among them; `load_plan` then renders and decodes at the planned
sizes. `--dry-run` prints the `Plan`; `plan_to_dict` is its JSON form. Whenever an input is cut
or shrunk, the plan carries a note for stderr: nothing is lowered silently.

Sharing is max-min fair twice: first between inputs (a photo next to a long video keeps its
detail), then between the pages or frames of each input. No torch is imported here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kimi_cli.errors import UsageError
from kimi_cli.media.options import MIN_IMAGE_TOKENS, MediaOptions
from kimi_cli.media.pdf import render_size
from kimi_cli.media.sources import (
    PDF_REFERENCE_SCALE,
    InputSpec,
    Slot,
    Source,
    Target,
    materialize,
    open_source,
    split_spec,
)
from kimi_cli.media.types import MediaItem
from kimi_cli.model.image_processor import ImageGeometry, ProcessorConfig, plan_image

__all__ = [
    "InputSpec",
    "MediaOptions",
    "Plan",
    "PlannedImage",
    "PlannedInput",
    "load_inputs",
    "load_plan",
    "make_plan",
    "plan_to_dict",
    "fair_shares",
    "estimate_text_tokens",
]

#: `<|media_start|>image<|media_content|>` before and `<|media_end|>` after each image.
IMAGE_WRAPPER_TOKENS = 4
#: System turn with the default system prompt, user turn markers and the generation prompt.
TEMPLATE_TOKENS = 16
_PIECE = re.compile(r"\w+|[^\w\s]")

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class PlannedImage:
    """One image of the plan: its label, the pixels handed over, and how the processor sees it."""

    label: str | None
    target: Target
    geometry: ImageGeometry

    @property
    def tokens(self) -> int:
        """LLM image tokens (`<|media_pad|>` count)."""
        return self.geometry.num_tokens


@dataclass(frozen=True, eq=False)
class PlannedInput:
    """One input of the plan and its images, in order."""

    source: Source
    images: tuple[PlannedImage, ...]
    notes: tuple[str, ...]

    @property
    def tokens(self) -> int:
        """Image tokens of all its images."""
        return sum(image.tokens for image in self.images)


@dataclass(frozen=True, eq=False)
class Plan:
    """Every input, its images and notes, and the prompt's token estimate."""

    inputs: tuple[PlannedInput, ...]
    max_image_tokens: int
    text_tokens: int  # labels and image wrappers
    prompt_tokens: int  # the user's prompt text and the chat template

    @property
    def image_tokens(self) -> int:
        """Image tokens of all inputs."""
        return sum(item.tokens for item in self.inputs)

    @property
    def total_tokens(self) -> int:
        """Estimated prompt length in tokens."""
        return self.image_tokens + self.text_tokens + self.prompt_tokens

    @property
    def notes(self) -> tuple[str, ...]:
        """Every note, in input order, for stderr."""
        return tuple(note for item in self.inputs for note in item.notes)


def make_plan(
    specs: Sequence[str | InputSpec],
    options: MediaOptions | None = None,
    processor: ProcessorConfig | None = None,
    prompt: str = "",
    count_tokens: TokenCounter | None = None,
) -> Plan:
    """Check all inputs and plan their images within the budget; nothing is rendered yet.

    `processor` is the checkpoint's image processor config (default: the 2506 values);
    `count_tokens` counts text tokens exactly when a tokenizer is at hand, else it is estimated.
    Raises `MediaError` (exit 3) or `UsageError` (exit 2) with one line naming the file.
    """
    options = options or MediaOptions()
    cfg = processor or ProcessorConfig()
    count = count_tokens or estimate_text_tokens
    sources = [
        open_source(spec if isinstance(spec, InputSpec) else split_spec(spec), options) for spec in specs
    ]
    _check_options_apply(sources, options)
    demands = [[plan_image(*slot.size, cfg).num_tokens for slot in src.slots] for src in sources]
    caps = _share_budget(demands, options.max_image_tokens)
    inputs = tuple(
        _plan_input(src, need, cap, cfg, options.max_image_tokens)
        for src, need, cap in zip(sources, demands, caps, strict=True)
    )
    labels = [image.label for item in inputs for image in item.images]
    text = sum(count(label) for label in labels if label) + IMAGE_WRAPPER_TOKENS * len(labels)
    return Plan(inputs, options.max_image_tokens, text, TEMPLATE_TOKENS + (count(prompt) if prompt else 0))


def load_plan(plan: Plan) -> list[MediaItem]:
    """Render and decode every planned image; items come in the order the inputs were given."""
    return [
        materialize(item.source, [image.target for image in item.images], item.notes) for item in plan.inputs
    ]


def load_inputs(
    specs: Sequence[str | InputSpec],
    options: MediaOptions | None = None,
    processor: ProcessorConfig | None = None,
) -> list[MediaItem]:
    """Check, plan and load `specs` (paths, or `report.pdf:1-3` selections) in the order given."""
    return load_plan(make_plan(specs, options, processor))


def fair_shares(demands: Sequence[int], floors: Sequence[int], budget: int) -> list[int]:
    """Max-min fair split of `budget`: each gets min(demand, max(floor, level)), level as high as fits.

    Raises `ValueError` when the floors alone exceed the budget (pure).
    """
    floors = [min(f, d) for f, d in zip(floors, demands, strict=True)]
    if sum(floors) > budget:
        raise ValueError(f"floors {sum(floors)} exceed the budget {budget}")

    def total(level: int) -> int:
        return sum(min(d, max(f, level)) for d, f in zip(demands, floors, strict=True))

    lo, hi = 0, max(demands, default=0)
    while lo < hi:  # the largest level whose total fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if total(mid) <= budget else (lo, mid - 1)
    return [min(d, max(f, lo)) for d, f in zip(demands, floors, strict=True)]


def estimate_text_tokens(text: str) -> int:
    """A rough token count without the tokenizer: words and digit runs split, CJK per character."""
    pieces = _PIECE.findall(text)
    return sum(math.ceil(len(p) / 5) if p.isascii() else len(p) for p in pieces)


def _check_options_apply(sources: Sequence[Source], options: MediaOptions) -> None:
    kinds = {src.kind for src in sources}
    if options.pages is not None and "pdf" not in kinds:
        raise UsageError("--pages only applies to PDFs, and no input is a PDF", "drop --pages")
    if options.time_range is not None and not kinds & {"video", "animation"}:
        raise UsageError("--range only applies to videos and animations, and no input is one", "drop --range")


def _share_budget(demands: Sequence[Sequence[int]], budget: int) -> list[list[int]]:
    """Per-image token caps: fair between inputs, then fair between each input's images."""
    floors = [[min(MIN_IMAGE_TOKENS, d) for d in need] for need in demands]
    try:
        shares = fair_shares([sum(n) for n in demands], [sum(f) for f in floors], budget)
    except ValueError:
        count = sum(len(n) for n in demands)
        raise UsageError(
            f"{count} images need at least {sum(map(sum, floors))} image tokens "
            f"({MIN_IMAGE_TOKENS} each), over --max-image-tokens {budget}",
            "select fewer pages (--pages), fewer frames (--max-frames, --range), or raise --max-image-tokens",
        ) from None
    return [
        fair_shares(need, floor, share) for need, floor, share in zip(demands, floors, shares, strict=True)
    ]


def _plan_input(
    src: Source, demands: Sequence[int], caps: Sequence[int], cfg: ProcessorConfig, budget: int
) -> PlannedInput:
    images = []
    for slot, demand, cap in zip(src.slots, demands, caps, strict=True):
        limit = cap if cap < demand else None
        decided = plan_image(*slot.size, cfg, limit)
        target = _target(src.kind, slot, decided.resized, limit)
        # Decoded at the resized size, the image needs only padding: the same grid, decided once.
        # A PDF page is rendered at a scale, and its pixel size may round differently.
        geometry = (
            replace(decided, original=decided.resized)
            if target.size == decided.resized
            else plan_image(*target.size, cfg, limit)
        )
        images.append(PlannedImage(slot.label, replace(target, geometry=geometry), geometry))
    note = _lowered_note(src, demands, images, budget)
    return PlannedInput(src, tuple(images), src.notes + ((note,) if note else ()))


def _target(kind: str, slot: Slot, fit: tuple[int, int], limit: int | None) -> Target:
    """Pages are rendered and images decoded straight at the size the processor would use."""
    if kind == "pdf" and slot.points is not None:
        scale = PDF_REFERENCE_SCALE * min(fit[0] / slot.size[0], fit[1] / slot.size[1])
        return Target(render_size(slot.points, scale), limit, scale)
    # Photos, animation frames and video frames are decoded (or shrunk right after decoding) at
    # the size the processor would resize them to, so it only pads them.
    return Target(fit, limit)


def _lowered_note(
    src: Source, demands: Sequence[int], images: Sequence[PlannedImage], budget: int
) -> str | None:
    lowered = [(d, im) for d, im in zip(demands, images, strict=True) if im.target.max_tokens is not None]
    if not lowered:
        return None
    why = f"to fit the {budget}-token budget (--max-image-tokens)"
    top = max(im.tokens for _, im in lowered)
    if src.kind == "image":
        (demand, im), size = lowered[0], src.slots[0].size
        shown = im.geometry.resized
        return (
            f"{src.name}: lowered from {demand} to {im.tokens} image tokens ({size[0]}x{size[1]} shown as "
            f"{shown[0]}x{shown[1]}) {why}"
        )
    if src.kind == "pdf":
        scale = min(im.target.scale or PDF_REFERENCE_SCALE for _, im in lowered)
        return (
            f"{src.name}: {len(lowered)} page(s) lowered to at most {top} image tokens each "
            f"(about {scale * 72:.0f} dpi instead of {PDF_REFERENCE_SCALE * 72:.0f}) {why}; "
            "select fewer pages for sharper ones"
        )
    size, shown = src.slots[0].size, lowered[0][1].geometry.resized
    return (
        f"{src.name}: frames lowered from {max(d for d, _ in lowered)} to at most {top} image tokens each "
        f"({size[0]}x{size[1]} shown as {shown[0]}x{shown[1]}) {why}; fewer frames (--max-frames) are sharper"
    )


def plan_to_dict(plan: Plan) -> dict[str, object]:
    """The plan as JSON-ready values for `--dry-run --format json`."""
    return {
        "max_image_tokens": plan.max_image_tokens,
        "image_tokens": plan.image_tokens,
        "text_tokens": plan.text_tokens,
        "prompt_tokens": plan.prompt_tokens,
        "total_tokens": plan.total_tokens,
        "inputs": [_input_to_dict(item) for item in plan.inputs],
        "notes": list(plan.notes),
    }


def _input_to_dict(item: PlannedInput) -> dict[str, object]:
    src = item.source
    return {
        "input": src.spec.text,
        "path": src.spec.path,
        "kind": src.kind,
        "format": src.format,
        "summary": src.summary,
        "image_tokens": item.tokens,
        "images": [
            {
                "label": image.label,
                "size": list(image.target.size),
                "resized": list(image.geometry.resized),
                "padded": list(image.geometry.padded),
                "grid_hw": list(image.geometry.grid_hw),
                "tokens": image.tokens,
                "max_tokens": image.target.max_tokens,
            }
            for image in item.images
        ],
        "notes": list(item.notes),
    }
