"""Where the time to first token goes, and what the alternatives would cost (CUDA only, `--explore`).

- The vision tower and the LM prefill under each SDPA backend (flash, memory-efficient, cuDNN).
- Preprocessing on the GPU: upload the uint8 pixels, then normalise and patchify with torch, against
  the numpy path of `build_prompt` (same values; an image that needs no resize, as 1792x1792).
- Profiler tables (top kernels) of one vision pass and one prefill, written to a folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kimi_cli.bench.timing import median, now

BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


def timed_ms(fn: Callable[[], Any], reps: int = 3) -> float:
    """Median milliseconds of `fn()` after one warm-up call."""
    fn()
    samples = []
    for _ in range(reps):
        t0 = now()
        fn()
        samples.append(now() - t0)
    return 1000 * median(samples)


def by_backend(fn: Callable[[], Any]) -> dict[str, float | str]:
    """`fn` timed under each SDPA backend alone (an error message where the backend refuses)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out: dict[str, float | str] = {}
    for name in BACKENDS:
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]):
                out[name.lower()] = round(timed_ms(fn), 2)
        except Exception as exc:  # noqa: BLE001 - "not supported for these inputs" is the answer
            out[name.lower()] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
    return out


def profile_table(fn: Callable[[], Any], rows: int = 25) -> str:
    """Top CUDA kernels (self device time) of one call of `fn`, after a warm-up call."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    try:
        return prof.key_averages().table(sort_by="self_device_time_total", row_limit=rows)
    except (KeyError, AttributeError):
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows)


def explore(loaded: Any, image_path: Path, question: str, profile_dir: Path | None) -> dict[str, Any]:
    """All the explorations above; profiler tables go to `profile_dir` when given."""
    import torch

    from kimi_cli.bench.ttft import load_inputs, merged_embeds, prefill_plain, vision_features

    with torch.inference_mode():
        _, (ids, pv, thw, _) = load_inputs(loaded, image_path, question)
        features = vision_features(loaded, pv, thw)
        embeds = merged_embeds(loaded, ids, features)
        result: dict[str, Any] = {
            "vision_ms_by_sdpa_backend": by_backend(lambda: vision_features(loaded, pv, thw)),
            "prefill_ms_by_sdpa_backend": by_backend(lambda: prefill_plain(loaded, embeds)),
        }
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            (profile_dir / "profile_vision.txt").write_text(profile_table(lambda: vision_features(loaded, pv, thw)))
            (profile_dir / "profile_prefill.txt").write_text(profile_table(lambda: prefill_plain(loaded, embeds)))
    return result
