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


def gpu_preprocess(image: Any, cfg: Any, device: Any, dtype: Any) -> Any:
    """Prototype: a decoded RGB image's uint8 pixels to the GPU, normalise + patchify there.

    Returns [patches, 3, p, p] in `dtype`. Only for images that need no resize or padding (side a multiple
    of the patch size and within the token limit, as 1792x1792); the general case would resize on the CPU
    (PIL bicubic, to match the reference) or on the GPU, and pad there.
    """
    import numpy as np
    import torch

    pixels = np.array(image)  # writable, as torch.from_numpy wants
    p = cfg.patch_size
    h, w = pixels.shape[0] // p * p, pixels.shape[1] // p * p
    x = torch.from_numpy(pixels[:h, :w]).to(device, non_blocking=True)
    mean = torch.tensor(cfg.image_mean, device=device)
    std = torch.tensor(cfg.image_std, device=device)
    x = (x.float() / 255.0 - mean) / std
    x = x.view(h // p, p, w // p, p, 3).permute(0, 2, 4, 1, 3).reshape(-1, 3, p, p)
    return x.to(dtype)


def preprocess_compare(loaded: Any, image_path: Path, question: str) -> dict[str, Any]:
    """From a decoded image: `build_prompt` + upload vs the GPU prototype (ms), and the pixels' max difference."""
    import torch

    from kimi_cli.bench.ttft import decode_image, prepare_prompt

    image = decode_image(image_path)
    cpu_ms = timed_ms(lambda: prepare_prompt(loaded, image, question))
    dev, dtype = loaded.model.device, loaded.dtype
    gpu_ms = timed_ms(lambda: gpu_preprocess(image, loaded.processor_config, dev, dtype))
    _, pv, _, _ = prepare_prompt(loaded, image, question)
    ours = gpu_preprocess(image, loaded.processor_config, dev, dtype)
    same_shape = tuple(ours.shape) == tuple(pv.shape)
    diff = float((ours.float() - pv.float()).abs().max()) if same_shape else None
    torch.cuda.synchronize()
    return {"cpu_build_prompt_and_upload_ms": round(cpu_ms, 2), "gpu_prototype_ms": round(gpu_ms, 2),
            "same_shape": same_shape, "max_abs_diff": diff}


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
            "preprocess": preprocess_compare(loaded, image_path, question),
        }
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            (profile_dir / "profile_vision.txt").write_text(profile_table(lambda: vision_features(loaded, pv, thw)))
            (profile_dir / "profile_prefill.txt").write_text(profile_table(lambda: prefill_plain(loaded, embeds)))
    return result
