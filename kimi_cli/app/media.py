"""Inputs to messages: plan the files before any model loads, load them, build the user turn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


def checkpoint_file(model: str | None, name: str) -> Path | None:
    """`name` from the checkpoint when it is on disk (a local directory or the hub cache), else None.

    No network access and no model load: planning and `--dry-run` see what the run will see.
    """
    from kimi_cli.model.checkpoint import looks_like_path

    path: Path | None = None
    if model and looks_like_path(model):
        path = Path(model).expanduser() / name
    elif model:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(model, name)
            path = Path(found) if isinstance(found, str) else None
        except Exception:  # noqa: BLE001 - a cache lookup must never stop a run
            path = None
    return path if path is not None and path.is_file() else None


def processor_config_for(model: str | None) -> Any:
    """The checkpoint's image-processing config when it is on disk, else 2506's."""
    from kimi_cli.model.image_processor import ProcessorConfig

    path = checkpoint_file(model, "preprocessor_config.json")
    if path is not None:
        try:
            return ProcessorConfig.from_file(path)
        except Exception:  # noqa: BLE001 - the model load reports a bad file properly
            pass
    return ProcessorConfig()


def plan_inputs(specs: list[Any], options: MediaOptions, model: str | None, prompt: str = "") -> Any:
    """Check every input and plan its images (opens and sniffs files, renders nothing)."""
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
