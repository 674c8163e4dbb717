"""Where a turn's time to first token goes inside `LocalEngine`: the same steps inline, in a fresh
thread, and through `stream()`, for each decode path. Usage:

    python benchmarks/engine_overhead.py --model DIR [--image-size 1792] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from statistics import median
from typing import Any


def _request(size: int, engine_mode: str) -> Any:
    from PIL import Image

    from kimi_cli.conversation import GenerationSettings, Message, Request
    from kimi_cli.media.types import ImagePart, TextPart

    image = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    parts = (ImagePart(image, "gradient.png"), TextPart("What is in this picture?"))
    return Request((Message("user", parts),), GenerationSettings(max_new_tokens=8, temperature=0))


def _inline(loaded: Any, engine: Any, request: Any) -> dict[str, float]:
    """build_prompt, the decoder's prefill and the first token, timed step by step in this thread."""
    import torch

    from kimi_cli.model.prompt import build_prompt

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    prompt = build_prompt(request.messages, loaded.tokenizer, loaded.processor_config)
    t1 = time.perf_counter()
    with torch.inference_mode():
        decoder = engine._decoder_for_turn()
        t2 = time.perf_counter()
        logits = decoder.prefill(prompt, request.settings.max_new_tokens)
        first = next(iter(decoder.tokens(logits, request.settings, tuple(loaded.stop_ids), 8)))
    t3 = time.perf_counter()
    times.update(build_prompt=t1 - t0, new_decoder=t2 - t1, prefill_and_first=t3 - t2, total=t3 - t0)
    del first
    return times


def _threaded(loaded: Any, engine: Any, request: Any) -> float:
    box: dict[str, float] = {}
    thread = threading.Thread(target=lambda: box.update(_inline(loaded, engine, request)))
    thread.start()
    thread.join()
    return box["total"]


def _streamed(engine: Any, request: Any) -> float:
    from kimi_cli.events.types import Finished

    for event in engine.stream(request):
        if isinstance(event, Finished):
            return event.timings.first_token_s
    raise RuntimeError("no Finished event")


def measure(loaded: Any, mode: str, size: int, reps: int) -> dict[str, Any]:
    """Medians (ms) over `reps` runs after one warm-up of each way."""
    from kimi_cli.engine.local import LocalEngine

    engine = LocalEngine(loaded, mode=mode)  # type: ignore[arg-type]
    request = _request(size, mode)
    rows: dict[str, list[float]] = {}
    for i in range(reps + 1):
        inline = _inline(loaded, engine, request)
        threaded = _threaded(loaded, engine, request)
        streamed = _streamed(engine, request)
        if i == 0:
            continue
        for key, value in {**{f"inline_{k}": v for k, v in inline.items()}, "threaded_total": threaded,
                           "stream_first_token": streamed}.items():
            rows.setdefault(key, []).append(value)
    return {"mode": mode, **{k: round(1000 * median(v), 1) for k, v in rows.items()}}


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image-size", type=int, default=1792)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="plain,fast")
    args = parser.parse_args()
    from kimi_cli.model.checkpoint import load_model

    loaded = load_model(args.model)
    for mode in args.modes.split(","):
        print(json.dumps(measure(loaded, mode, args.image_size, args.reps)))


if __name__ == "__main__":
    main()
