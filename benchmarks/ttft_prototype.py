"""Prototype of a faster time-to-first-token path, measured against the current one on the same model.

    PYTHONPATH=. python benchmarks/ttft_prototype.py --model DIR [--image-size 1792] [--json OUT]

Current path (what `LocalEngine` fast mode runs today, pieces timed as in `kimi bench`): `build_prompt`
(PIL -> numpy normalise + patchify on the CPU) -> upload float32 -> vision tower -> `FastDecoder` prefill.
Prototype: tokenize without touching pixels -> upload uint8, normalise + patchify on the GPU -> vision tower
with the 2-D rope fused into one Triton kernel per q/k (transformers does it in float32 with ~8 elementwise
kernels) -> the same prefill. Also timed: the engine-side costs in front of the first token today (the
blake2b cache keys over the float32 pixels, decoder allocation, graph capture). Checks: the prototype's
pixels, vision features and first token against the current path's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from kimi_cli.bench.explore import gpu_preprocess, timed_ms  # noqa: E402
from kimi_cli.bench.timing import now  # noqa: E402
from kimi_cli.bench.ttft import QUESTION, decode_image, image_message, time_pieces, write_bench_image  # noqa: E402


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, rows, heads, D: tl.constexpr, HALF: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out = x * cos + rotate_half(x) * sin in float32, rows of D = one (position, head); cos/sin per position."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (r < rows) & (d < D)
    s = r // heads
    x = tl.load(x_ptr + r * D + d, mask=mask, other=0.0).to(tl.float32)
    partner = tl.where(d < HALF, d + HALF, d - HALF)
    xp = tl.load(x_ptr + r * D + partner, mask=mask, other=0.0).to(tl.float32)
    xp = tl.where(d < HALF, -xp, xp)
    c = tl.load(cos_ptr + s * D + d, mask=mask, other=0.0)
    sn = tl.load(sin_ptr + s * D + d, mask=mask, other=0.0)
    tl.store(out_ptr + r * D + d, (x * c + xp * sn).to(out_ptr.dtype.element_ty), mask=mask)


def _rope_one(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    d = x.shape[-1]
    heads = x.shape[-2]
    rows = x.numel() // d
    out = torch.empty_like(x)
    block_r = 32
    _rope_kernel[(triton.cdiv(rows, block_r),)](x, cos, sin, out, rows, heads, D=d, HALF=d // 2, BLOCK_R=block_r,
                                               BLOCK_D=triton.next_power_of_2(d))
    return out


def fused_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[Any, Any]:
    """Drop-in for transformers' `apply_rotary_pos_emb_vision` (q, k: [1, S, H, D]; cos, sin: [S, D])."""
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    return _rope_one(q, cos, sin), _rope_one(k, cos, sin)


@contextlib.contextmanager
def patched_rope() -> Iterator[None]:
    """Route the vision tower's rope through `fused_rope` for the duration."""
    import transformers.models.kimi_k25.modeling_kimi_k25 as mod

    saved = mod.apply_rotary_pos_emb_vision
    mod.apply_rotary_pos_emb_vision = fused_rope
    try:
        yield
    finally:
        mod.apply_rotary_pos_emb_vision = saved


def rope_check(device: Any, positions: int = 16384, heads: int = 16, dim: int = 72) -> dict[str, float]:
    """The fused rope against transformers' on random bf16 q/k of the vision tower's shapes."""
    from transformers.models.kimi_k25.modeling_kimi_k25 import apply_rotary_pos_emb_vision

    q, k = (torch.randn(1, positions, heads, dim, device=device).to(torch.bfloat16) for _ in range(2))
    angle = torch.rand(positions, dim, device=device) * 6.28
    ref = apply_rotary_pos_emb_vision(q, k, angle.cos(), angle.sin())
    ours = fused_rope(q, k, angle.cos(), angle.sin())
    diff = torch.stack([(a.float() - b.float()).abs().max() for a, b in zip(ref, ours, strict=True)])
    frac = sum(float((a != b).float().mean()) for a, b in zip(ref, ours, strict=True)) / 2
    return {"rope_max_abs_diff": float(diff.max()), "rope_elements_differing": frac}


def prompt_ids(loaded: Any, image: Any, question: str) -> list[int]:
    """Token ids of the prompt without processing pixels (the image only decides its token count)."""
    from kimi_cli.model.image_processor import plan_image
    from kimi_cli.model.prompt import render_chat

    n = plan_image(image.width, image.height, loaded.processor_config).num_tokens
    return loaded.tokenizer.encode(render_chat([image_message(image, question)], None, [n]))


def prototype_pass(loaded: Any, dec: Any, image_path: Path, question: str) -> tuple[dict[str, float], int, Any]:
    """One prototype TTFT: piece times (s), the first token, and the vision features."""
    from PIL import Image

    from kimi_cli.bench.ttft import merged_embeds, vision_features

    dev = loaded.model.device
    t0 = time.perf_counter()
    with Image.open(image_path) as img:
        image = img.convert("RGB")
    t1 = time.perf_counter()
    ids = torch.tensor([prompt_ids(loaded, image, question)], device=dev)
    t2 = now()
    pv = gpu_preprocess(image, loaded.processor_config, dev, loaded.dtype)
    p = loaded.processor_config.patch_size
    thw = torch.tensor([[1, image.height // p, image.width // p]], device=dev)
    t3 = now()
    with patched_rope():
        features = vision_features(loaded, pv, thw)
    t4 = now()
    dec.reset()
    token = int(dec.prefill(merged_embeds(loaded, ids, features)).argmax())
    t5 = now()
    times = {"decode": t1 - t0, "tokenize": t2 - t1, "gpu_preprocess": t3 - t2, "vision_fused_rope": t4 - t3,
             "prefill": t5 - t4}
    return times, token, features


def engine_overheads(loaded: Any, image_path: Path, question: str, positions: int) -> dict[str, float]:
    """Milliseconds of what `LocalEngine` fast mode does today before the first token, besides the pieces."""
    import numpy as np
    from PIL import Image

    from kimi_cli.bench.decode import new_fast_decoder
    from kimi_cli.engine.fast import SamplingParams
    from kimi_cli.engine.plain import cache_keys, image_runs
    from kimi_cli.model.prompt import build_prompt

    with Image.open(image_path) as img:
        image = img.convert("RGB")
    prompt = build_prompt([image_message(image, question)], loaded.tokenizer, loaded.processor_config)
    runs = image_runs(prompt.input_ids, loaded.tokenizer.media_pad_id)
    keys_ms = timed_ms(lambda: cache_keys(prompt.input_ids, runs, prompt.pixel_values, prompt.grid_hws))
    uint8_ms = timed_ms(lambda: __import__("hashlib").blake2b(np.asarray(image).tobytes(), digest_size=16))
    t0 = now()
    dec = new_fast_decoder(loaded, positions)
    t1 = now()
    capture_s = dec.capture(SamplingParams())
    return {"cache_keys_float32_pixels_ms": keys_ms, "blake2b_uint8_image_ms": uint8_ms,
            "decoder_allocation_ms": 1000 * (t1 - t0), "graph_capture_ms": 1000 * capture_s}


def measure(loaded: Any, image_path: Path, question: str, reps: int) -> dict[str, Any]:
    """Current pieces, prototype pieces (medians), the checks, and the engine overheads."""
    from kimi_cli.bench.decode import new_fast_decoder
    from kimi_cli.bench.timing import median
    from kimi_cli.bench.ttft import load_inputs, merged_embeds, vision_features

    with torch.inference_mode():
        _, (ids, pv, thw, prompt) = load_inputs(loaded, image_path, question)
        dec = new_fast_decoder(loaded, ids.shape[1] + 72)
        current = time_pieces(loaded, image_path, question, "fast", reps, decoder=dec)
        ref_features = vision_features(loaded, pv, thw)
        dec.reset()
        ref_token = int(dec.prefill(merged_embeds(loaded, ids, ref_features)).argmax())
        samples = [prototype_pass(loaded, dec, image_path, question) for _ in range(reps + 1)][1:]
        _, token, features = samples[-1]
        proto = {k: 1000 * median([s[0][k] for s in samples]) for k in samples[0][0]}
        checks = {
            "prompt_ids_equal": prompt_ids(loaded, decode_image(image_path), question) == list(prompt.input_ids),
            "pixels_max_abs_diff": float((gpu_preprocess(decode_image(image_path), loaded.processor_config,
                                                         pv.device, pv.dtype).float() - pv.float()).abs().max()),
            "vision_rel_diff": float((features.float() - ref_features.float()).norm() / ref_features.float().norm()),
            "first_token_equal": token == ref_token,
        }
        checks.update(rope_check(pv.device))
        overheads = engine_overheads(loaded, image_path, question, ids.shape[1] + 72)
    cur = {"decode": current.decode_ms, "build_prompt": current.prompt_ms, "upload": current.upload_ms,
           "vision": current.vision_ms, "prefill": current.prefill_ms}
    return {"current_ms": cur, "prototype_ms": proto, "checks": checks, "engine_overheads_ms": overheads,
            "current_ttft_ms_excl_decode": sum(v for k, v in cur.items() if k != "decode"),
            "prototype_ttft_ms_excl_decode": sum(v for k, v in proto.items() if k != "decode")}


def main(argv: list[str] | None = None) -> None:
    """Load the model, measure, print JSON (and write it with --json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--image-size", type=int, default=1792)
    p.add_argument("--question", default=QUESTION)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from kimi_cli.cli.session import quiet_libraries
    from kimi_cli.model.checkpoint import load_model

    quiet_libraries()
    loaded = load_model(args.model)
    image = write_bench_image(Path("/tmp/kimi-ttft-prototype"), args.image_size)
    result = measure(loaded, image, args.question, args.reps)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
