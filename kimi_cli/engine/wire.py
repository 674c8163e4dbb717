"""The OpenAI chat wire format for kimi messages, both ways. Pure values in, pure values out.

Client side (`messages_to_openai`): media planning stays in the client, so PDF pages and video frames
are already images with their `Page 3 of 12:` / `[00:01:05]` text parts; each image is sent as a PNG
`data:` URL, downscaled first to exactly the size the model's image processor would pick under the
image's token budget. Every backend (our server, vLLM, SGLang) therefore sees the same pixels and
the same prompt, and the server's own resize is a no-op.

Server side (`openai_to_messages`): content parts become a kimi `Message` with `TextPart`s and
`ImagePart`s. Only `data:` URLs are accepted: the server never opens a path or fetches a URL on a
client's behalf. Image bytes are parsed as hostile (size checked before decoding, fully decoded).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Sequence
from typing import Any

from kimi_cli.conversation import Message
from kimi_cli.media.types import ImagePart, TextPart

#: `data:image/png;base64,....` (the media type is informational; Pillow sniffs the bytes).
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)?(;[A-Za-z0-9=.+-]+)*;base64,", re.I)
_ROLES = ("system", "user", "assistant")


class WireError(ValueError):
    """A request the server must refuse; `status` and `code` become the OpenAI-style JSON error."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request",
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param


# ---------------------------------------------------------------- client: kimi -> OpenAI


def messages_to_openai(messages: Sequence[Message], system_prompt: str | None = None,
                       processor: Any = None) -> list[dict[str, Any]]:
    """OpenAI `messages` for a conversation; a `system_prompt` becomes a leading system message."""
    out: list[dict[str, Any]] = []
    if system_prompt is not None and not (messages and messages[0].role == "system"):
        out.append({"role": "system", "content": system_prompt})
    for message in messages:
        out.append({"role": message.role, "content": _content(message, processor)})
    return out


def _content(message: Message, processor: Any) -> str | list[dict[str, Any]]:
    if not message.images:
        return "".join(p.text for p in message.parts if isinstance(p, TextPart))
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(part, processor)}})
        elif parts and parts[-1]["type"] == "text":
            parts[-1]["text"] += part.text  # adjacent texts are one string, as in the chat template
        else:
            parts.append({"type": "text", "text": part.text})
    return parts


def image_data_url(part: ImagePart, processor: Any = None) -> str:
    """The image as a PNG `data:` URL, resized as the processor would resize it under its budget."""
    from PIL import Image

    from kimi_cli.model.image_processor import ProcessorConfig, plan_image

    image = part.image.convert("RGB")
    geometry = plan_image(image.width, image.height, processor or ProcessorConfig(), part.max_tokens)
    if geometry.resized != image.size:
        # The same filter as the processor's own resize, so the server-side resize is the identity.
        image = image.resize(geometry.resized, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------- server: OpenAI -> kimi


def openai_to_messages(raw: Any, max_images: int, max_pixels: int) -> tuple[Message, ...]:
    """kimi messages from an OpenAI `messages` list; raises `WireError` for anything malformed."""
    if not isinstance(raw, list) or not raw:
        raise WireError("`messages` must be a non-empty list", 422, "invalid_messages", "messages")
    messages = tuple(_message(item, i) for i, item in enumerate(raw))
    images = sum(1 for m in messages for p in m.parts if isinstance(p, _PendingImage))
    if images > max_images:
        raise WireError(f"{images} images in one request; this server takes at most {max_images}",
                        400, "too_many_images", "messages")
    if messages[-1].role == "assistant":
        raise WireError("the last message must not be the assistant's", 422, "invalid_messages", "messages")
    return tuple(_decode_images(m, max_pixels) for m in messages)


class _PendingImage:
    """An image part whose bytes are decoded only after the image count is checked."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data = data
        self.where = where


def _message(item: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise WireError(f"{where} must be an object", 422, "invalid_messages", where)
    role = item.get("role")
    if role not in _ROLES:
        raise WireError(f"{where}.role must be one of {', '.join(_ROLES)} (got {role!r})",
                        422, "invalid_messages", f"{where}.role")
    content = item.get("content")
    if content is None:
        content = ""
    if isinstance(content, str):
        return Message(role, (TextPart(content),))
    if not isinstance(content, list):
        raise WireError(f"{where}.content must be a string or a list of parts", 422, "invalid_messages", where)
    parts = tuple(_part(p, f"{where}.content[{j}]") for j, p in enumerate(content))
    if role != "user" and any(isinstance(p, _PendingImage) for p in parts):
        raise WireError(f"{where}: only user messages may carry images", 422, "invalid_messages", where)
    return Message(role, parts)  # type: ignore[arg-type]  # pending images are replaced below


def _part(part: Any, where: str) -> Any:
    if not isinstance(part, dict):
        raise WireError(f"{where} must be an object", 422, "invalid_content", where)
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise WireError(f"{where}.text must be a string", 422, "invalid_content", where)
        return TextPart(text)
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise WireError(f"{where}.image_url.url must be a string", 422, "invalid_content", where)
        return _PendingImage(decode_data_url(url, where), where)
    raise WireError(f"{where}: unsupported content part type {kind!r} (use text or image_url)",
                    422, "invalid_content", where)


def decode_data_url(url: str, where: str) -> bytes:
    """The bytes of a base64 `data:` URL; anything else (a path, an http URL) is refused."""
    match = _DATA_URL.match(url)
    if match is None:
        raise WireError(f"{where}: images must be sent as base64 data: URLs; this server never reads "
                        "paths or fetches URLs", 400, "invalid_image_url", where)
    payload = re.sub(r"\s+", "", url[match.end():])
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"{where}: the image's base64 data is invalid", 400, "invalid_base64", where) from None


def _decode_images(message: Message, max_pixels: int) -> Message:
    if not any(isinstance(p, _PendingImage) for p in message.parts):
        return message
    parts = tuple(_image(p, max_pixels) if isinstance(p, _PendingImage) else p for p in message.parts)
    return Message(message.role, parts)


def _image(pending: _PendingImage, max_pixels: int) -> ImagePart:
    import warnings

    from PIL import Image, ImageOps

    from kimi_cli.media.image import to_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(pending.data))
            if image.width * image.height > max_pixels:
                raise WireError(f"{pending.where}: image of {image.width}x{image.height} pixels is larger than "
                                f"this server's limit of {max_pixels} pixels", 413, "image_too_large", pending.where)
            image.load()
            image = to_rgb(ImageOps.exif_transpose(image) or image)
    except WireError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for hostile bytes
        raise WireError(f"{pending.where}: not a readable image ({type(exc).__name__})", 400,
                        "invalid_image", pending.where) from None
    return ImagePart(image=image, source=pending.where)
