"""Time to first token for one image plus a short question, split into its pieces, in a warm process.

Everything timed is the engine's own code: decode the image file (PIL, as the media loader does),
build the prompt (`build_prompt`), then the engine decoder's `prefill` (`PlainDecoder` or
`FastPathDecoder`), cut into upload, vision tower + projector and language-model prefill by forward
hooks on the vision tower and projector (`VisionClock`; device synchronised at each cut). Each piece is
the median over `reps` runs after one warm-up run. `engine_ttft` also times the whole turn through
`LocalEngine.stream`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.bench.timing import median, now, peak_gib, reset_peak

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


def engine_decoder(loaded: Any, engine: str) -> Any:
    """The engine's own decoder for one-shot turns: `PlainDecoder` or `FastPathDecoder` (no cache kept)."""
    if engine == "fast":
        from kimi_cli.engine.fastpath import FastPathDecoder

        return FastPathDecoder(loaded, keyed=False)
    from kimi_cli.engine.plain import PlainDecoder

    return PlainDecoder(loaded, keyed=False)


class VisionClock:
    """Forward hooks on the model's vision tower and projector that note (device-synchronised) when
    the engine's prefill starts and finishes its image work, so the engine's own prefill is timed
    in pieces without a copy of any of its steps."""

    def __init__(self, model: Any) -> None:
        self.start: float | None = None
        self.end: float | None = None
        inner = model.model
        self._handles = [inner.vision_tower.register_forward_pre_hook(self._on_start),
                         inner.mm_projector.register_forward_hook(self._on_end)]

    def _on_start(self, *_: Any) -> None:
        self.start = self.start or now()

    def _on_end(self, *_: Any) -> None:
        self.end = now()

    def reset(self) -> None:
        """Forget the last pass."""
        self.start = self.end = None

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def build_image_prompt(loaded: Any, image_path: Path, question: str) -> tuple[float, Any]:
    """Decode the image file and build the prompt as the engine does; returns (decode seconds, prompt)."""
    from kimi_cli.model.prompt import build_prompt

    t0 = time.perf_counter()
    image = decode_image(image_path)
    decode_s = time.perf_counter() - t0
    return decode_s, build_prompt([image_message(image, question)], loaded.tokenizer, loaded.processor_config)


def _one_pass(loaded: Any, image_path: Path, question: str, decoder: Any, clock: VisionClock,
              tokens: int) -> dict[str, float]:
    t0 = time.perf_counter()
    decode_s, prompt = build_image_prompt(loaded, image_path, question)
    t1 = now()
    clock.reset()
    decoder.prefill(prompt, tokens)  # the engine's prefill: upload, vision, embeddings, LM, logits
    t2 = now()
    if clock.start is None or clock.end is None:
        raise RuntimeError("the engine's prefill ran no vision tower for an image prompt")
    return {"decode": decode_s, "prompt": t1 - t0 - decode_s, "upload": clock.start - t1,
            "vision": clock.end - clock.start, "prefill": t2 - clock.end}


def time_pieces(loaded: Any, image_path: Path, question: str, engine: str, reps: int = 3,
                tokens: int = 16) -> TtftRun:
    """Warm TTFT pieces of the engine's own `engine` path ("plain" or "fast"): one warm-up, then medians.

    `upload` is from the prompt to the vision tower's start (pixels to the device, normalised and
    patchified there), `vision` the tower and projector, `prefill` the rest of the engine's prefill
    (embeddings, scatter, language model, last logits).
    """
    import torch

    run = TtftRun(engine=engine, reps=reps)
    decoder = engine_decoder(loaded, engine)
    clock = VisionClock(loaded.model)
    try:
        with torch.inference_mode():
            _, prompt = build_image_prompt(loaded, image_path, question)
            run.prompt_tokens, run.image_tokens = len(prompt.input_ids), prompt.image_tokens
            _one_pass(loaded, image_path, question, decoder, clock, tokens)
            reset_peak()
            samples = [_one_pass(loaded, image_path, question, decoder, clock, tokens) for _ in range(reps)]
    finally:
        clock.close()
    run.peak_gib = peak_gib()
    for key in ("decode", "prompt", "upload", "vision", "prefill"):
        setattr(run, f"{key}_ms", 1000 * median([s[key] for s in samples]))
    return run


def prompt_embeds(loaded: Any, image_path: Path, question: str) -> Any:
    """The image prompt's input embeddings, built by the engine's fast path (for the greedy check)."""
    import torch

    from kimi_cli.engine.fastpath import prompt_embeddings
    from kimi_cli.engine.plain import prompt_keys

    with torch.inference_mode():
        _, prompt = build_image_prompt(loaded, image_path, question)
        ids, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
        return prompt_embeddings(loaded, prompt, ids, runs, keep=0)


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
    from kimi_cli.app.engines import local_engine
    from kimi_cli.conversation import GenerationSettings, Request
    from kimi_cli.events.types import ErrorEvent, Finished, Notice

    run = EngineRun(engine=mode, reps=reps)
    engine = local_engine(loaded, mode)  # the engine kimi ask makes, over the bench's loaded model
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
