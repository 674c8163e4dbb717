"""Conversation values shared by the CLI, the REPL, the prompt builder and the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kimi_cli.media.types import ImagePart, Part, TextPart
from kimi_cli.settings import BY_NAME

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat turn. User turns may carry images; assistant turns hold only the answer text."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def text(cls, role: Role, text: str) -> Message:
        """A message with a single text part."""
        return cls(role=role, parts=(TextPart(text),))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """The image parts, in order."""
        return tuple(p for p in self.parts if isinstance(p, ImagePart))


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling and length settings (defaults: the model card's, declared in `kimi_cli.settings`)."""

    max_new_tokens: int = BY_NAME["max_new_tokens"].default
    temperature: float = BY_NAME["temperature"].default
    top_p: float = BY_NAME["top_p"].default
    seed: int | None = None
    #: Most thinking tokens before the engine closes the thinking (0 skips it); None: no limit.
    think_budget: int | None = None
    #: JSON Schema (as JSON text) the answer must match after the thinking; None: free text.
    json_schema: str | None = None


@dataclass(frozen=True)
class Request:
    """What the engine is asked to do: continue `messages` with an assistant turn."""

    messages: tuple[Message, ...]
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    system_prompt: str | None = None
