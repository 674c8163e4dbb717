"""Kimi-VL chat format: render a conversation to the prompt string and then to model inputs.

The format is the checkpoint's chat template (facts section 8), written out in Python so no Jinja
or remote code is needed. Nothing is inserted between parts: no newlines, no separators.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kimi_cli.conversation import Message
from kimi_cli.media.types import ImagePart, TextPart
from kimi_cli.model.facts import (
    DEFAULT_SYSTEM_PROMPT,
    GENERATION_PROMPT,
    IM_END,
    MEDIA_PAD,
    THINK_CLOSE,
    THINK_OPEN,
    image_block,
    turn_header,
)
from kimi_cli.model.image_processor import ProcessorConfig, grid_array, patchify_canvases, prepare_canvases

_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + ".*?" + re.escape(THINK_CLOSE), re.DOTALL)


class PromptTokenizer(Protocol):
    """What prompt building needs from the tokenizer (`kimi_cli.model.tokenizer`)."""

    media_pad_id: int
    im_end_id: int

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings become their ids."""
        ...

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text` with special-token strings kept as plain text."""
        ...


def strip_thinking(text: str) -> str:
    """An assistant reply without its reasoning: only the answer is kept in chat history.

    Drops every `◁think▷...◁/think▷` block, anything before a close marker that was never
    opened (the model may start thinking without the open marker), and an unclosed block at
    the end (generation interrupted while thinking). Text without markers is returned as is.
    """
    if THINK_OPEN not in text and THINK_CLOSE not in text:
        return text
    answer = _THINK_BLOCK.sub("", text)
    # The official demo keeps what follows the last close marker; do the same for strays.
    answer = answer.rsplit(THINK_CLOSE, 1)[-1]
    answer = answer.split(THINK_OPEN, 1)[0]
    return answer.strip()


def render_chat(
    messages: Sequence[Message], system_prompt: str | None, image_token_counts: Sequence[int]
) -> str:
    """The full prompt string, each image expanded to its `<|media_pad|>` tokens.

    `image_token_counts[i]` is the token count of the i-th image across all messages. A leading
    system message is used as is; otherwise a system turn with `system_prompt` (or the default)
    is added. The string ends with the generation prompt for the assistant's reply.
    """
    num_images = sum(len(m.images) for m in messages)
    if len(image_token_counts) != num_images:
        raise ValueError(f"{len(image_token_counts)} image token counts for {num_images} images")
    if any(n < 1 for n in image_token_counts):
        raise ValueError(f"image token counts must be positive: {list(image_token_counts)}")
    counts = iter(image_token_counts)
    return _render(messages, system_prompt, lambda: MEDIA_PAD * next(counts))


def render_chat_unexpanded(messages: Sequence[Message], system_prompt: str | None) -> str:
    """The prompt as the official chat template writes it: one `<|media_pad|>` per image."""
    return _render(messages, system_prompt, lambda: MEDIA_PAD)


#: A piece of the prompt and whether it is template (trusted: special-token strings become their
#: ids) or content (untrusted: encoded as plain text).
Segment = tuple[str, bool]


def _render(messages: Sequence[Message], system_prompt: str | None, pads: Callable[[], str]) -> str:
    return "".join(text for text, _ in _segments(messages, system_prompt, pads))


def _segments(messages: Sequence[Message], system_prompt: str | None, pads: Callable[[], str]) -> list[Segment]:
    out: list[Segment] = []
    if not messages or messages[0].role != "system":
        text = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
        out.extend(_turn("system", [(text, False)]))
    for message in messages:
        out.extend(_turn(message.role, _content(message, pads)))
    out.append((GENERATION_PROMPT, True))
    return out


def _turn(role: str, content: list[Segment]) -> list[Segment]:
    return [(turn_header(role), True), *content, (IM_END, True)]


def _content(message: Message, pads: Callable[[], str]) -> list[Segment]:
    if message.role == "assistant":
        if message.images:
            raise ValueError("assistant turns carry text only")
        # Thinking may span parts, so strip the joined text rather than each part.
        return [(strip_thinking("".join(p.text for p in message.parts if isinstance(p, TextPart))), False)]
    out: list[Segment] = []
    for part in message.parts:
        if isinstance(part, ImagePart):
            out.append((image_block(pads()), True))
        elif out and not out[-1][1]:
            out[-1] = (out[-1][0] + part.text, False)  # adjacent texts are one string, as in the template
        else:
            out.append((part.text, False))
    return out


def encode_segments(segments: Sequence[Segment], tokenizer: PromptTokenizer) -> list[int]:
    """Token ids of a rendered prompt: template pieces with special tokens, content without."""
    ids: list[int] = []
    for text, trusted in segments:
        if text:
            ids.extend(tokenizer.encode(text) if trusted else tokenizer.encode_ordinary(text))
    return ids


@dataclass(frozen=True, eq=False)
class PromptInputs:
    """Token ids and images for one prompt, ready for the engine to turn into tensors.

    Images are kept as resized, padded uint8 canvases; the engine normalises and patchifies them
    on its device (`image_processor.pixel_values_torch`), which is far cheaper than doing it here.
    """

    input_ids: list[int]
    canvases: tuple[np.ndarray, ...]  # uint8 [H, W, 3] per image, in prompt order
    grid_hws: np.ndarray | None  # int64 [num_images, 2], None without images
    image_tokens: int  # `<|media_pad|>` ids in input_ids
    num_images: int
    processor: ProcessorConfig | None = None

    @property
    def pixel_values(self) -> np.ndarray | None:
        """float32 [sum of patches, 3, 14, 14] computed on the CPU (the reference path); None without images."""
        if not self.canvases or self.processor is None:
            return None
        return patchify_canvases(self.canvases, self.processor)


def build_prompt(
    messages: Sequence[Message],
    tokenizer: PromptTokenizer,
    proc_cfg: ProcessorConfig,
    system_prompt: str | None = None,
) -> PromptInputs:
    """Preprocess every image of `messages` (in order, each with its budget) and tokenize."""
    images = [part for message in messages for part in message.images]
    if not images:
        ids = encode_segments(_segments(messages, system_prompt, lambda: MEDIA_PAD), tokenizer)
        _check_pads(ids, tokenizer.media_pad_id, 0)
        return PromptInputs(ids, (), None, 0, 0, proc_cfg)
    canvases, geometries = prepare_canvases(
        [p.image for p in images], proc_cfg, [p.max_tokens for p in images], [p.geometry for p in images]
    )
    counts = [g.num_tokens for g in geometries]
    pads = iter(counts)
    ids = encode_segments(_segments(messages, system_prompt, lambda: MEDIA_PAD * next(pads)), tokenizer)
    _check_pads(ids, tokenizer.media_pad_id, sum(counts))
    return PromptInputs(ids, tuple(canvases), grid_array(geometries), sum(counts), len(images), proc_cfg)


def _check_pads(ids: list[int], media_pad_id: int, expected: int) -> None:
    # The model scatters image features onto these ids; a mismatch would fail deep in the
    # forward pass. User text is encoded without special tokens, so this is an internal check.
    found = ids.count(media_pad_id)
    if found != expected:
        raise ValueError(
            f"prompt has {found} {MEDIA_PAD} tokens but its images need {expected}; "
            "this is a bug in prompt building"
        )
