"""Where the weights go and in which format: the GPU budget, `--quantize`, and the memory plan.

Runs before any weight is read. On a CUDA device the budget is the GPU's free memory, or
`--max-gpu-memory` when smaller (which also caps this process's allocator, so a 24 GiB card can be
tried on a bigger one); `--quantize auto` picks the format from the plan (`memory.choose_format`).
On a CPU (or MPS) `auto` keeps the checkpoint's weights as they are; an explicit format still applies
(the reference path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kimi_cli.errors import ModelLoadError, UsageError
from kimi_cli.model.formats import FORMAT_NAMES
from kimi_cli.model.memory import MemoryPlan, Need, check_fits, choose_format, make_plan

QUANTIZE_CHOICES = ("auto", *FORMAT_NAMES)


@dataclass(frozen=True)
class Placement:
    """The chosen format, its memory plan (None off CUDA) and the line saying why."""

    format: str
    plan: MemoryPlan | None
    reason: str


def gpu_budget(device: str, max_gpu_memory: int | None) -> tuple[int, tuple[int, int]]:
    """(bytes this process may use, compute capability); caps the allocator when a maximum is given."""
    import torch

    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    free, total = torch.cuda.mem_get_info(dev)
    capability = torch.cuda.get_device_capability(dev)
    if max_gpu_memory is None:
        return free, capability
    torch.cuda.set_per_process_memory_fraction(min(1.0, max_gpu_memory / total), dev)
    return min(free, max_gpu_memory), capability


def check_quantize(requested: str) -> None:
    """A usage error for an unknown `--quantize` value."""
    if requested not in QUANTIZE_CHOICES:
        raise UsageError(f"--quantize {requested}: unknown format", hint="use one of: " + ", ".join(QUANTIZE_CHOICES))


def place(checkpoint: Any, requested: str, device: str, need: Need, max_gpu_memory: int | None,
          stored: str | None) -> Placement:
    """Pick the weight format for this load (see the module docstring)."""
    check_quantize(requested)
    if stored is not None and requested not in ("auto", stored):
        raise ModelLoadError(f"{checkpoint.path.parent}: quantized as {stored}; --quantize {requested} cannot apply",
                             hint=f"use --quantize {stored} (or auto), or point --model at the original checkpoint")
    if not device.startswith("cuda"):
        fmt = stored or ("bf16" if requested == "auto" else requested)
        return Placement(fmt, None, f"{fmt} on {device}")
    budget, capability = gpu_budget(device, max_gpu_memory)
    text, vision = checkpoint.text, checkpoint.vision
    if stored is not None or requested != "auto":
        fmt = stored or requested
        why = _not_applicable(fmt, capability)
        if why:
            raise ModelLoadError(why, hint="use --quantize int8 or int4 on this GPU")
        plan = make_plan(text, vision, fmt, need, budget)
        check_fits(plan, need)
        how = "as stored in the checkpoint" if stored else "as asked"
        return Placement(fmt, plan, f"{fmt} {how}: needs {plan.total / 2**30:.1f} GiB of {budget / 2**30:.1f} GiB")
    plan, reason = choose_format(text, vision, need, budget, capability)
    return Placement(plan.format, plan, reason)


def _not_applicable(fmt: str, capability: tuple[int, int]) -> str | None:
    from kimi_cli.model.formats import get_format

    return get_format(fmt).info.applies(capability)


def default_need(max_new_tokens: int, max_image_tokens: int, patches_per_image: int = 16384) -> Need:
    """What a request may need when planned before its inputs are known: the full image budget
    plus the generation budget, and the processor's largest image."""
    return Need(context_tokens=max_image_tokens + max_new_tokens + 1024,
                image_patches=min(patches_per_image, 4 * max_image_tokens))
