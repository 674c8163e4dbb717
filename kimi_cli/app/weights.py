"""The weight format and GPU memory plan of a local load: `--quantize` and `--max-gpu-memory` (issue 11).

`load_args` turns the settings into `load_model` keywords; `load_notes` is what stderr says about the
load; `print_memory_plan` is the `--dry-run` part. The planning itself lives in `kimi_cli.model.memory`
and `kimi_cli.model.placement`.
"""

from __future__ import annotations

import sys
from typing import Any


def load_args(settings: Any) -> dict[str, Any]:
    """`load_model` keywords for the weight format and the memory plan."""
    from kimi_cli.model.placement import default_need
    from kimi_cli.sizes import parse_size

    cap = settings.max_gpu_memory
    return {"quantize": settings.quantize, "max_gpu_memory": parse_size(cap) if cap else None,
            "need": default_need(settings.max_new_tokens, settings.max_image_tokens)}


def load_notes(loaded: Any, requested: str, debug: bool = False) -> list[str]:
    """The format `auto` picked and why (on a GPU); that quantizing on the fly could be avoided; with
    `debug`, where the load's seconds went."""
    lines = list(getattr(loaded, "notes", ()))
    placement = getattr(loaded, "placement", None)
    if requested == "auto" and placement is not None and placement.plan is not None:
        lines.insert(0, f"weights: {placement.reason}")
    phases = getattr(loaded, "load_phases", None)
    if debug and phases is not None and phases.seconds:
        lines.append(f"load {loaded.load_seconds:.2f} s: {phases.line()}")
    return lines


def print_memory_plan(settings: Any) -> None:
    """`--dry-run`: the memory plan of the format the load would use (stdout), without loading."""
    from kimi_cli.model.memory import make_plan
    from kimi_cli.model.placement import place
    from kimi_cli.model.qload import stored_format

    checkpoint = _local_checkpoint(settings.model)
    if checkpoint is None:
        sys.stderr.write("kimi: note: no memory plan: the checkpoint's config.json is not on this machine yet\n")
        return
    args = load_args(settings)
    stored = stored_format(checkpoint.quantization)
    device = settings.device
    if device == "auto":
        device = "cuda" if _cuda_visible() else "cpu"
    if device.startswith("cuda"):
        placement = place(checkpoint, args["quantize"], device, args["need"], args["max_gpu_memory"], stored)
        plan, why = placement.plan, placement.reason
    else:
        fmt = stored or ("bf16" if args["quantize"] == "auto" else args["quantize"])
        plan = make_plan(checkpoint.text, checkpoint.vision, fmt, args["need"], args["max_gpu_memory"])
        why = f"{fmt} (no GPU: planned against --max-gpu-memory)"
    need = args["need"]
    lines = plan.lines() + [f"  planned for         {need.context_tokens} tokens of context, "
                            f"an image of {need.image_patches} patches", f"  choice: {why}"]
    sys.stdout.write("\n".join(lines) + "\n")


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def _local_checkpoint(model: str | None) -> Any:
    """The checkpoint's parsed config.json when it is on disk (local dir or hub cache), else None."""
    from kimi_cli.errors import KimiError
    from kimi_cli.model.checkpoint import checkpoint_file
    from kimi_cli.model.config import read_checkpoint_config

    path = checkpoint_file(model, "config.json")
    if path is None:
        return None
    try:
        return read_checkpoint_config(path.parent)
    except KimiError:
        return None
