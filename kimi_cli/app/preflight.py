"""Checks that need no model: device and decoder availability, and prompt + budget against the context.

They run after the settings are read and the inputs planned, before any weights load, so that a
mistake costs a second, not a model load. Each failure is a `UsageError` (exit 2).
"""

from __future__ import annotations

from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.textsafe import json_loads

#: The official checkpoint's context (text_config.max_position_embeddings), used when no
#: config.json is on disk yet.
OFFICIAL_CONTEXT = 131072
#: Below this many answer tokens, lowering the default budget is worth a note (answers may be cut).
CLAMP_NOTE_BELOW = 8192


def check_settings(settings: Any) -> None:
    """Combinations that are wrong whatever the machine (no torch imported)."""
    if settings.decoder == "fast" and settings.device in ("cpu", "mps"):
        raise UsageError(f"--decoder fast needs a CUDA GPU, and --device is {settings.device}",
                         hint="use --decoder plain (or auto) on this device")


def check_local_device(settings: Any) -> None:
    """The device asked for exists, and `--decoder fast` can run on it (imports torch, loads nothing)."""
    import torch

    check_settings(settings)
    device = settings.device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is visible",
                             hint="use --device cpu, or check the driver with nvidia-smi")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible",
                             hint="number GPUs from 0 (cuda:0)")
    mps = getattr(torch.backends, "mps", None)
    if device == "mps" and not (mps is not None and mps.is_available()):
        raise UsageError("--device mps: this PyTorch build has no usable MPS (Apple GPU) support",
                         hint="use --device cpu (or auto)")
    if settings.decoder == "fast":
        from kimi_cli.engine.fast import available

        target = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        if not available(target):
            raise UsageError("--decoder fast needs a CUDA GPU with Triton, and this machine has none",
                             hint="use --decoder plain (or auto) on this machine")


def context_length(model: str | None) -> int:
    """The checkpoint's context from its config.json when on disk, else the official 131072."""
    from kimi_cli.model.checkpoint import checkpoint_file

    path = checkpoint_file(model, "config.json")
    if path is None:
        return OFFICIAL_CONTEXT
    try:
        value = json_loads(path.read_text(encoding="utf-8"))["text_config"]["max_position_embeddings"]
    except Exception:  # noqa: BLE001 - a bad config.json is the model loader's to report
        return OFFICIAL_CONTEXT
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else OFFICIAL_CONTEXT


def fit_budget(settings: Any, prompt_tokens: int, context: int, extra: str = "") -> tuple[Any, str | None]:
    """Settings whose `max_new_tokens` fits after a prompt of about `prompt_tokens`, and a note.

    An explicit `max_new_tokens` (flag, env, config, session) that does not fit is an error; the
    default is lowered to what fits (with a note when that leaves less than 8192 tokens).
    `extra` is added to the too-long-prompt hint (e.g. how much came from stdin).
    """
    room = context - prompt_tokens
    if room < 1:
        raise UsageError(f"the prompt is about {prompt_tokens} tokens, more than the model's context of "
                         f"{context} tokens", hint="shorten the prompt, or use fewer or smaller inputs "
                         f"(--max-image-tokens){extra}")
    budget = settings.max_new_tokens
    if budget <= room:
        return settings, None
    if settings.explicit("max_new_tokens"):
        raise UsageError(f"{settings.origins['max_new_tokens']}: the prompt (about {prompt_tokens} tokens) and "
                         f"{budget} new tokens exceed the model's context of {context} tokens",
                         hint=f"use at most {room} new tokens, or shorten the prompt")
    lowered = settings.with_values("context", max_new_tokens=room)
    note = None
    if room < CLAMP_NOTE_BELOW:
        note = (f"max_new_tokens lowered from {budget} to {room} to fit the model's context of {context} "
                "tokens; the answer may be cut short")
    return lowered, note
