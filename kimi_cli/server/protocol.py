"""The OpenAI chat-completions protocol of `kimi serve`: parse a request body, format replies. Pure.

Thinking goes out apart from the answer, under both field names clients read today
(`reasoning_content`, as SGLang and older vLLM, and `reasoning`, as current vLLM), and `usage`
counts the reasoning tokens in `completion_tokens_details.reasoning_tokens`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from kimi_cli.conversation import GenerationSettings, Request
from kimi_cli.engine.wire import WireError, openai_to_messages
from kimi_cli.events.types import Finished, Usage
from kimi_cli.server.config import ServeConfig
from kimi_cli.textsafe import json_loads

_FINISH_REASON = {"end_turn": "stop", "max_tokens": "length", "cancelled": "stop", "error": "stop"}
_MAX_STOP = 4


@dataclass(frozen=True)
class ChatCall:
    """One parsed `/v1/chat/completions` request."""

    request: Request
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    model: str


def parse_chat(body: bytes, config: ServeConfig, model_ids: tuple[str, ...],
               defaults: GenerationSettings) -> ChatCall:
    """A `ChatCall` from the raw body; every problem is a `WireError` with its HTTP status."""
    try:
        data = json_loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"request body is not valid JSON ({exc})", 400, "invalid_json") from None
    if not isinstance(data, dict):
        raise WireError("request body must be a JSON object", 400, "invalid_json")
    model = data.get("model", model_ids[0])
    if model not in model_ids:
        raise WireError(f"model {model!r} is not served here (this server has {model_ids[0]!r})",
                        404, "model_not_found", "model")
    if _number(data, "n", int, 1, 1) != 1:
        raise WireError("n must be 1", 422, "invalid_value", "n")
    messages = openai_to_messages(data.get("messages"), config.max_images, config.max_image_pixels)
    settings = _settings(data, config, defaults)
    options = data.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise WireError("stream_options must be an object", 422, "invalid_value", "stream_options")
    return ChatCall(Request(messages, settings), stream=_bool(data, "stream"),
                    include_usage=bool(options.get("include_usage", False)), stop=_stop(data.get("stop")),
                    model=model)


def _settings(data: dict[str, Any], config: ServeConfig, defaults: GenerationSettings) -> GenerationSettings:
    limit = config.max_new_tokens
    key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(data, key, int, min(defaults.max_new_tokens, limit), 1)
    if max_tokens > limit:
        raise WireError(f"{key} {max_tokens} is above this server's limit of {limit}", 400,
                        "max_tokens_too_large", key)
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise WireError("seed must be an integer", 422, "invalid_value", "seed")
    from kimi_cli.engine.wire_steering import parse_steering

    return GenerationSettings(max_new_tokens=max_tokens,
                              temperature=float(_number(data, "temperature", float, defaults.temperature, 0.0, 2.0)),
                              top_p=float(_number(data, "top_p", float, defaults.top_p, 0.0, 1.0)),
                              seed=seed, **parse_steering(data, defaults.think_budget))


def _number(data: dict[str, Any], key: str, kind: type, default: Any, low: float,
            high: float | None = None) -> Any:
    value = data.get(key)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok or value < low or (high is not None and value > high):
        bounds = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise WireError(f"{key} must be a{'n integer' if kind is int else ' number'} {bounds}",
                        422, "invalid_value", key)
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise WireError(f"{key} must be true or false", 422, "invalid_value", key)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > _MAX_STOP:
        raise WireError(f"stop must be a string or a list of up to {_MAX_STOP} non-empty strings",
                        422, "invalid_value", "stop")
    return tuple(items)


#: Template tokens around each turn (`<|im_user|>user<|im_middle|>` ... `<|im_end|>`), rounded up.
_TURN_TOKENS = 8


def prompt_size(messages: Any, tokenizer: Any, processor: Any) -> int:
    """The prompt's length in tokens, to within a few template tokens (text + image tokens + turns)."""
    from kimi_cli.media.types import ImagePart, TextPart
    from kimi_cli.model.image_processor import plan_image

    total = _TURN_TOKENS * (len(messages) + 2)  # + the system turn and the generation prompt
    for message in messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                total += len(tokenizer.encode_ordinary(part.text))
            elif isinstance(part, ImagePart):
                total += plan_image(part.image.width, part.image.height, processor, part.max_tokens).num_tokens + 3
    return total


def fit_context(call: ChatCall, size: int, context_length: int) -> ChatCall:
    """Refuse a prompt the context cannot hold; shorten max_tokens to what is left of it."""
    if size >= context_length:
        raise WireError(f"the prompt is about {size} tokens; this model's context is {context_length} tokens",
                        400, "context_length_exceeded", "messages")
    room = context_length - size
    settings = call.request.settings
    if settings.max_new_tokens <= room:
        return call
    shorter = replace(settings, max_new_tokens=room)
    return replace(call, request=replace(call.request, settings=shorter))


def error_body(message: str, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
            503: "server_busy"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Reply:
    """Formats one completion: stream chunks, or the whole response object."""

    def __init__(self, model: str) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """One `chat.completion.chunk`."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The last chunk with `stream_options.include_usage`: no choices, only usage."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_object(usage)}

    def response(self, thinking: str, answer: str, finished: Finished, stopped: bool) -> dict[str, Any]:
        """The whole `chat.completion` object (non-streamed requests)."""
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if thinking:
            message["reasoning_content"] = message["reasoning"] = thinking
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": finish_reason(finished, stopped)}],
                "usage": usage_object(finished.usage)}


def thinking_delta(text: str) -> dict[str, Any]:
    """A delta carrying reasoning under both field names."""
    return {"reasoning_content": text, "reasoning": text}


def finish_reason(finished: Finished, stopped: bool) -> str:
    """OpenAI's finish_reason for how the turn ended (`stopped`: a stop string matched)."""
    return "stop" if stopped else _FINISH_REASON[finished.stop_reason]


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI `usage`, with reasoning tokens, reused (cached) and image prompt tokens."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.generated_tokens,
            "total_tokens": usage.prompt_tokens + usage.generated_tokens,
            "completion_tokens_details": {"reasoning_tokens": usage.thinking_tokens},
            "prompt_tokens_details": {"cached_tokens": usage.reused_prompt_tokens,
                                      "image_tokens": usage.image_tokens}}


class StopMatcher:
    """Cuts the answer at the first stop string, holding back text that could still start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.matched = False

    def feed(self, text: str) -> str:
        """The answer text that is safe to send now."""
        if not self.stops or self.matched:
            return "" if self.matched else text
        buf = self.held + text
        cuts = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.matched, self.held = True, ""
            return buf[: min(cuts)]
        keep = max((n for s in self.stops for n in range(1, len(s)) if buf.endswith(s[:n])), default=0)
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Held text at the end of the reply (no stop string completed)."""
        held, self.held = ("" if self.matched else self.held), ""
        return held
