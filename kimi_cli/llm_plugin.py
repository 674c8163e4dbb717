"""A plugin for simonw/llm: `llm -m kimi-vl -a photo.jpg "What is this?"` through a running `kimi serve`.

Registered through the `llm` entry point in pyproject.toml, so it loads when `llm` and kimi share an
environment. It finds the server the way `kimi ask` does: `KIMI_API_BASE` (with `KIMI_API_KEY`), or
else the discovery file of a `kimi serve` of `KIMI_MODEL` (default: the official checkpoint). Image
attachments are sent as data; the thinking arrives as llm reasoning events, the answer as text.
This module imports `llm`, so nothing else in kimi imports it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import llm
from llm.parts import StreamEvent

from kimi_cli import DEFAULT_MODEL

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/tiff"})


@llm.hookimpl
def register_models(register: Any) -> None:
    """Register `kimi-vl` (alias `kimi`)."""
    register(KimiVL(), aliases=("kimi",))


class KimiVL(llm.Model):
    """Kimi-VL-A3B-Thinking-2506 served by `kimi serve` (or any OpenAI-compatible server)."""

    model_id = "kimi-vl"
    can_stream = True
    attachment_types = IMAGE_TYPES

    class Options(llm.Options):
        temperature: float | None = None
        max_tokens: int | None = None
        seed: int | None = None

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[Any]:
        """Stream the reply: reasoning events, then the answer's text."""
        from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, ThinkingDelta

        engine = _engine()
        try:
            for event in engine.stream(_request(prompt, conversation)):
                if isinstance(event, ThinkingDelta) and event.text:
                    yield StreamEvent(type="reasoning", chunk=event.text)
                elif isinstance(event, AnswerDelta):
                    yield StreamEvent(type="text", chunk=event.text)
                elif isinstance(event, ErrorEvent):
                    raise llm.ModelError(event.message + (f" ({event.hint})" if event.hint else ""))
                elif isinstance(event, Finished):
                    u = event.usage
                    response.set_usage(input=u.prompt_tokens, output=u.generated_tokens,
                                       details={"reasoning_tokens": u.thinking_tokens})
        finally:
            engine.close()


def _engine() -> Any:
    from kimi_cli.engine.connect import find_target, remote_engine

    model = os.environ.get("KIMI_MODEL") or DEFAULT_MODEL
    try:
        target = find_target("server", model, os.environ.get("KIMI_API_BASE") or None,
                             os.environ.get("KIMI_API_KEY") or None, os.environ.get("KIMI_API_MODEL") or None)
    except Exception as exc:  # noqa: BLE001 - a KimiError: say it the llm way
        raise llm.ModelError(f"{exc} (start one with `kimi serve`)") from None
    return remote_engine(target, implicit_thinking=True)


def _request(prompt: Any, conversation: Any) -> Any:
    from kimi_cli.conversation import GenerationSettings, Message, Request

    history: list[Message] = []
    for earlier in getattr(conversation, "responses", None) or ():
        history.append(_user(earlier.prompt.prompt or "", earlier.prompt.attachments))
        history.append(Message.text("assistant", earlier.text_or_raise()))
    history.append(_user(prompt.prompt or "", prompt.attachments))
    opts = prompt.options
    defaults = GenerationSettings()
    settings = GenerationSettings(
        max_new_tokens=opts.max_tokens or defaults.max_new_tokens,
        temperature=defaults.temperature if opts.temperature is None else opts.temperature,
        seed=opts.seed)
    return Request(tuple(history), settings, system_prompt=prompt.system or None)


def _user(text: str, attachments: Any) -> Any:
    from PIL import Image

    from kimi_cli.conversation import Message
    from kimi_cli.media.image import to_rgb
    from kimi_cli.media.types import ImagePart, TextPart

    parts: list[Any] = []
    for attachment in attachments or ():
        try:
            image = Image.open(io.BytesIO(attachment.content_bytes()))
            image.load()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
            raise llm.ModelError(f"{attachment.path or attachment.url or 'attachment'}: not a readable image "
                                 f"({type(exc).__name__})") from None
        parts.append(ImagePart(to_rgb(image), source=str(attachment.path or attachment.url or "attachment")))
    return Message("user", (*parts, TextPart(text)))
