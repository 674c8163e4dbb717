"""Where the time to first token goes, and what the alternatives would cost (CUDA only, `--explore`).

- The engine's vision step (`engine.fastpath.image_features`) and the plain engine's whole prefill
  (`PlainDecoder.prefill`) under each SDPA backend (flash, memory-efficient, cuDNN).
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

    from kimi_cli.bench.ttft import build_image_prompt, engine_decoder
    from kimi_cli.engine.fastpath import image_features
    from kimi_cli.engine.plain import prompt_keys, suffix_images

    model = loaded.model
    with torch.inference_mode():
        _, prompt = build_image_prompt(loaded, image_path, question)
        _, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
        pv, thw = suffix_images(prompt, runs, 0, model.device, model.dtype)
        decoder = engine_decoder(loaded, "plain")

        def vision() -> Any:
            return image_features(model, pv, thw)

        def prefill() -> Any:
            return decoder.prefill(prompt)

        result: dict[str, Any] = {
            "vision_ms_by_sdpa_backend": by_backend(vision),
            "plain_engine_prefill_ms_by_sdpa_backend": by_backend(prefill),  # vision + language model
        }
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            (profile_dir / "profile_vision.txt").write_text(profile_table(vision))
            (profile_dir / "profile_prefill.txt").write_text(profile_table(prefill))
    return result
