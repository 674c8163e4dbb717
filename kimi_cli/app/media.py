"""Inputs to messages: plan the files before any model loads, load them, build the user turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kimi_cli.conversation import Message
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import MediaItem, TextPart


@dataclass(frozen=True)
class MediaFlags:
    """How a command was asked to read its inputs (`--pages --range --fps --max-frames --max-pages`);
    None means "not given" (the default applies)."""

    pages: str | None = None
    time_range: str | None = None
    fps: float | None = None
    max_frames: int | None = None
    max_pages: int | None = None


def media_options(settings: Any, flags: MediaFlags | None = None) -> MediaOptions:
    """`MediaOptions` from the settings and a command's media flags (checked here)."""
    f = flags or MediaFlags()
    return MediaOptions.from_flags(pages=f.pages, time_range=f.time_range, fps=f.fps, max_frames=f.max_frames,
                                   max_pages=f.max_pages, max_image_tokens=settings.max_image_tokens)


def input_specs(specs: list[str], stdin_path: str | None) -> list[Any]:
    """Planner specs; the temporary copy of stdin is called `stdin` in messages."""
    from kimi_cli.media.sources import InputSpec

    return [InputSpec("-", stdin_path, name="stdin") if s == "-" and stdin_path else s for s in specs]


def plan_inputs(specs: list[Any], options: MediaOptions, model: str | None, prompt: str = "") -> Any:
    """Check every input and plan its images (opens and sniffs files, renders nothing)."""
    from kimi_cli.model.image_processor import processor_config_for
    from kimi_cli.plan import make_plan

    return make_plan(specs, options, processor_config_for(model), prompt)


def load_planned(plan: Any) -> tuple[list[MediaItem], tuple[str, ...]]:
    """Render and decode a plan's inputs; returns the items and their notes for stderr."""
    from kimi_cli.plan import load_plan

    items = load_plan(plan)
    return items, tuple(note for item in items for note in item.notes)


def load_media(specs: list[Any], options: MediaOptions, model: str | None,
               prompt: str = "") -> tuple[list[MediaItem], tuple[str, ...]]:
    """Check, plan and load inputs before any model loads; returns items and notes for stderr."""
    if not specs:
        return [], ()
    return load_planned(plan_inputs(specs, options, model, prompt))


def build_user_message(items: list[MediaItem], prompt: str) -> Message:
    """One user turn: every input's parts in the order given, then the prompt text."""
    parts = [part for item in items for part in item.parts]
    return Message("user", (*parts, TextPart(prompt)))
