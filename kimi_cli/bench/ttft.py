"""Time to first token for one image plus a short question, split into its pieces, in a warm process.

Pieces, each timed directly (device synchronised at both ends): decode the image file (PIL), build the
prompt (`build_prompt`: resize, normalise, patchify, tokenize), upload the pixels, the vision tower and
projector (`model.model.get_image_features`), and the language-model prefill to the first token (embed,
scatter the image features, prefill, lm_head, argmax). Each piece is the median over `reps` runs after
one warm-up run. `engine_ttft` also times the whole turn through `LocalEngine.stream`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.bench.timing import median, now, peak_gib, reset_peak
from kimi_cli.model.compat import cache_kwarg

QUESTION = "What is in this picture? Answer in one sentence."


def bench_image(size: int) -> Any:
    """A deterministic RGB test image of `size` x `size` (smooth bands and a grid: compresses like a photo)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    r = 0.5 + 0.5 * np.sin(6.0 * x + 2.0 * y)
    g = 0.5 + 0.5 * np.cos(4.0 * y - 3.0 * x * y)
    b = ((np.floor(x * 16) + np.floor(y * 16)) % 2) * 0.6 + 0.2 * x
    rgb = (np.stack([r, g, b], axis=-1).clip(0, 1) * 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def write_bench_image(folder: Path, size: int) -> Path:
    """Save `bench_image(size)` as PNG under `folder`; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-{size}x{size}.png"
    if not path.exists():
        bench_image(size).save(path)
    return path


def image_message(image: Any, question: str, source: str = "bench.png") -> Any:
    """One user message: the image, then the question."""
    from kimi_cli.conversation import Message
    from kimi_cli.media.types import ImagePart, TextPart

    return Message("user", (ImagePart(image, source), TextPart(question)))


@dataclass
class TtftRun:
    """Milliseconds of each piece (medians) for one engine."""

    engine: str
    decode_ms: float = 0.0
    prompt_ms: float = 0.0
    upload_ms: float = 0.0
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    prompt_tokens: int = 0
    image_tokens: int = 0
    reps: int = 0
    peak_gib: float | None = None

    @property
    def preprocess_ms(self) -> float:
        """Prompt building (resize, normalise, patchify, tokenize) + upload."""
        return self.prompt_ms + self.upload_ms

    @property
    def total_ms(self) -> float:
        """Time to first token from a decoded image (as `LocalEngine` counts it): preprocess + vision + prefill."""
        return self.preprocess_ms + self.vision_ms + self.prefill_ms

    @property
    def with_decode_ms(self) -> float:
        """`total_ms` plus decoding the image file (done by the media loader, before the engine)."""
        return self.decode_ms + self.total_ms


def decode_image(path: Path) -> Any:
    """Open and decode an image file to RGB (PIL)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def load_inputs(loaded: Any, image_path: Path, question: str) -> tuple[dict[str, float], Any]:
    """Decode, build the prompt and upload; returns the piece times (s) and the prompt inputs on the device."""
    from kimi_cli.model.prompt import build_prompt

    t0 = time.perf_counter()
    image = decode_image(image_path)
    t1 = time.perf_counter()
    prompt = build_prompt([image_message(image, question)], loaded.tokenizer, loaded.processor_config)
    t2 = now()
    inputs = _upload(loaded, prompt)
    t3 = now()
    return {"decode": t1 - t0, "prompt": t2 - t1, "upload": t3 - t2}, inputs


def _upload(loaded: Any, prompt: Any) -> Any:
    """Token ids, pixels (model dtype) and [N, 3] grids of `prompt` on the model's device."""
    import numpy as np
    import torch

    from kimi_cli.model.image_processor import pixel_values_torch

    dev = loaded.model.device
    # As the engine does: uint8 canvases go to the device, normalise + patchify happen there.
    pv = pixel_values_torch(prompt.canvases, prompt.processor, dev, loaded.dtype)
    grid = np.concatenate([np.ones((len(prompt.grid_hws), 1), np.int64), prompt.grid_hws], axis=1)
    return torch.tensor([prompt.input_ids], device=dev), pv, torch.from_numpy(grid).to(dev), prompt


def vision_features(loaded: Any, pv: Any, thw: Any) -> Any:
    """Vision tower + projector: image features [tokens, hidden] for all images, concatenated."""
    import torch

    out = loaded.model.model.get_image_features(pv, thw, return_dict=True)
    return torch.cat(list(out.pooler_output), dim=0)


def merged_embeds(loaded: Any, ids: Any, features: Any) -> Any:
    """Token embeddings with the image features scattered onto the placeholder ids: [1, L, hidden]."""
    model = loaded.model
    mask = ids == model.config.image_token_id
    embeds = model.model.get_input_embeddings()(ids.masked_fill(mask, 0))
    return embeds.masked_scatter(mask.unsqueeze(-1), features.to(embeds.dtype))


def prefill_plain(loaded: Any, embeds: Any) -> int:
    """Plain transformers prefill (dynamic cache) to the first greedy token."""
    from transformers import DynamicCache

    lm = loaded.model.model.language_model
    out = lm(inputs_embeds=embeds, use_cache=True, **cache_kwarg(lm, DynamicCache(config=lm.config)))
    return int(loaded.model.lm_head(out.last_hidden_state[:, -1]).argmax())


def prefill_fast(decoder: Any, embeds: Any) -> int:
    """Our decoder's prefill (into its latent cache) to the first greedy token."""
    decoder.reset()
    return int(decoder.prefill(embeds).argmax())


def _one_pass(loaded: Any, image_path: Path, question: str, decoder: Any) -> dict[str, float]:
    times, (ids, pv, thw, _) = load_inputs(loaded, image_path, question)
    t0 = now()
    features = vision_features(loaded, pv, thw)
    t1 = now()
    embeds = merged_embeds(loaded, ids, features)
    if decoder is None:
        prefill_plain(loaded, embeds)
    else:
        prefill_fast(decoder, embeds)
    t2 = now()
    times.update(vision=t1 - t0, prefill=t2 - t1)
    return times


def time_pieces(loaded: Any, image_path: Path, question: str, engine: str, reps: int = 3,
                decoder: Any = None) -> TtftRun:
    """Warm TTFT pieces for `engine` ("plain", or "fast" with its `decoder`): one warm-up, then medians."""
    import torch

    run = TtftRun(engine=engine, reps=reps)
    with torch.inference_mode():
        _, (ids, _, _, prompt) = load_inputs(loaded, image_path, question)
        run.prompt_tokens, run.image_tokens = ids.shape[1], prompt.image_tokens
        _one_pass(loaded, image_path, question, decoder)
        reset_peak()
        samples = [_one_pass(loaded, image_path, question, decoder) for _ in range(reps)]
    run.peak_gib = peak_gib()
    for key in ("decode", "prompt", "upload", "vision", "prefill"):
        setattr(run, f"{key}_ms", 1000 * median([s[key] for s in samples]))
    return run


def prompt_embeds(loaded: Any, image_path: Path, question: str) -> Any:
    """The merged input embeddings of the image prompt (for the greedy check)."""
    import torch

    with torch.inference_mode():
        _, (ids, pv, thw, _) = load_inputs(loaded, image_path, question)
        return merged_embeds(loaded, ids, vision_features(loaded, pv, thw))


@dataclass
class EngineRun:
    """Whole turns through `LocalEngine.stream` (medians over `reps` after a warm-up)."""

    engine: str
    first_token_ms: float | None = None
    tokens_per_s: float | None = None
    generated: int = 0
    reps: int = 0
    error: str | None = None
    notices: list[str] = field(default_factory=list)


def engine_ttft(loaded: Any, mode: str, image: Any, question: str, tokens: int, reps: int = 3) -> EngineRun:
    """Time to first token and tokens/s of greedy turns through `LocalEngine(mode=mode)`."""
    from kimi_cli.conversation import GenerationSettings, Request
    from kimi_cli.engine.local import LocalEngine
    from kimi_cli.events.types import ErrorEvent, Finished, Notice

    run = EngineRun(engine=mode, reps=reps)
    engine = LocalEngine(loaded, mode=mode)  # type: ignore[arg-type]
    request = Request(messages=(image_message(image, question),),
                      settings=GenerationSettings(max_new_tokens=tokens, temperature=0.0, seed=0))
    firsts, rates = [], []
    for i in range(reps + 1):
        for event in engine.stream(request):
            if isinstance(event, Notice) and event.text not in run.notices:
                run.notices.append(event.text)
            elif isinstance(event, ErrorEvent):
                run.error = event.message
                return run
            elif isinstance(event, Finished) and i > 0:
                firsts.append(event.timings.first_token_s)
                rates.append(event.tokens_per_s)
                run.generated = event.usage.generated_tokens
    good_firsts = [f for f in firsts if f is not None]
    good_rates = [r for r in rates if r is not None]
    run.first_token_ms = 1000 * median(good_firsts) if good_firsts else None
    run.tokens_per_s = median(good_rates) if good_rates else None
    return run
