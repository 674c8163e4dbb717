"""Glue shared by `kimi ask` and `kimi chat`: inputs, user messages, renderers and the engine."""

from __future__ import annotations

import json
import sys
from typing import Any

from kimi_cli.conversation import Message
from kimi_cli.media.options import MediaOptions
from kimi_cli.media.types import MediaItem, TextPart
from kimi_cli.textsafe import json_safe, printable


def media_options(settings: dict[str, Any], inputs: Any) -> MediaOptions:
    """`MediaOptions` from the settings chain and the command's media flags (checked here)."""
    return MediaOptions.from_flags(pages=inputs.pages, time_range=inputs.time_range, fps=inputs.fps,
                                   max_frames=inputs.max_frames, max_pages=inputs.max_pages,
                                   max_image_tokens=settings["max_image_tokens"])


def input_specs(specs: list[str], stdin_path: str | None) -> list[Any]:
    """Planner specs; the temporary copy of stdin is called `stdin` in messages."""
    from kimi_cli.media.sources import InputSpec

    return [InputSpec("-", stdin_path, name="stdin") if s == "-" and stdin_path else s for s in specs]


def processor_config_for(model: str | None) -> Any:
    """The checkpoint's image-processing config (see `model.image_processor.processor_config_for`)."""
    from kimi_cli.model.image_processor import processor_config_for as config_for

    return config_for(model)


def load_media(specs: list[Any], options: MediaOptions, model: str | None,
               prompt: str = "") -> tuple[list[MediaItem], tuple[str, ...]]:
    """Check, plan and load inputs before any model loads; returns items and notes for stderr."""
    from kimi_cli.plan import load_plan, make_plan

    if not specs:
        return [], ()
    items = load_plan(make_plan(specs, options, processor_config_for(model), prompt))
    return items, tuple(note for item in items for note in item.notes)


def build_user_message(items: list[MediaItem], prompt: str) -> Message:
    """One user turn: every input's parts in the order given, then the prompt text."""
    parts = [part for item in items for part in item.parts]
    return Message("user", (*parts, TextPart(prompt)))


def print_plan(specs: list[Any], options: MediaOptions, output_format: str, prompt: str,
               model: str | None) -> None:
    """`--dry-run`: the plan as a table (or JSON), without loading the model."""
    from kimi_cli.plan import make_plan, plan_to_dict

    plan = make_plan(specs, options, processor_config_for(model), prompt)
    if output_format in ("json", "jsonl"):
        doc = json_safe(plan_to_dict(plan))  # non-UTF-8 file names as visible escapes, not surrogates
        sys.stdout.write(json.dumps(doc, indent=2 if output_format == "json" else None) + "\n")
        return
    from kimi_cli.render.plan import plan_lines

    sys.stdout.write("\n".join(plan_lines(plan)) + "\n")
    for note in plan.notes:
        sys.stderr.write(f"kimi: note: {printable(note)}\n")


def load_engine(settings: dict[str, Any], keep_cache: bool = False) -> Any:
    """Load the model named by the settings and wrap it in the local engine."""
    from kimi_cli.engine.local import LocalEngine
    from kimi_cli.model.checkpoint import load_model
    from kimi_cli.model.facts import checkpoint_thinks

    quiet_libraries()
    with _status(f"loading {settings['model']}"):
        loaded = load_model(settings["model"], device=settings["device"], dtype=settings["dtype"],
                            attention=settings["attention"])
    return LocalEngine(loaded, mode=settings["engine"], keep_cache=keep_cache,
                       implicit_thinking=checkpoint_thinks(loaded))


def quiet_libraries() -> None:
    """Keep transformers' progress bars and advice off stderr unless stderr is a terminal."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()


class _status:
    """Say on stderr what slow thing is starting, only when stderr is a terminal.

    A plain line rather than a spinner: huggingface_hub's download bars and transformers'
    weight-loading bar draw on the same terminal and would fight a spinner for the cursor.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __enter__(self) -> _status:
        if sys.stderr.isatty():
            sys.stderr.write(self.text + " ...\n")
            sys.stderr.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        return None
