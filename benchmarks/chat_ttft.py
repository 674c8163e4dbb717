"""Time to first token of a chat follow-up vs the first turn (issue 5: cached conversation context).

Turn 1: a large image plus a long question; turn 2: a short follow-up in the same conversation. With
the engine keeping its cache, turn 2 computes only the new tokens; for contrast the same follow-up is
also timed in a fresh engine (no cache). Usage:

    python benchmarks/chat_ttft.py --model DIR [--image-size 1792] [--text-tokens 2000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _conversation(size: int, words: int):
    from PIL import Image

    from kimi_cli.conversation import GenerationSettings, Message, Request
    from kimi_cli.media.types import ImagePart, TextPart

    image = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    question = "Describe every detail of this picture. " + " ".join(f"word{i % 97}" for i in range(words))
    settings = GenerationSettings(max_new_tokens=16, temperature=0)
    first = Request((Message("user", (ImagePart(image, "gradient.png"), TextPart(question))),), settings)
    return first, settings, Message, Request


def _turn(engine, request) -> tuple[str, object]:
    from kimi_cli.events.types import AnswerDelta, Finished, ThinkingDelta

    text, last = [], None
    for event in engine.stream(request):
        if isinstance(event, (ThinkingDelta, AnswerDelta)):
            text.append(event.text)
        last = event
    if not isinstance(last, Finished):
        raise SystemExit(f"turn failed: {last}")
    return "".join(text), last


def run(args: argparse.Namespace) -> dict[str, object]:
    """Load the model, time both turns (after one warm-up conversation) and return the numbers."""
    from kimi_cli.engine.local import LocalEngine
    from kimi_cli.model.checkpoint import load_model

    loaded = load_model(args.model, device=args.device)
    first, settings, message, request_cls = _conversation(args.image_size, args.text_words)
    results: dict[str, object] = {"model": args.model, "device": str(loaded.model.device)}
    for attempt in ("warmup", "measured"):
        engine = LocalEngine(loaded, mode=args.engine, keep_cache=True)
        reply, done1 = _turn(engine, first)
        follow = request_cls((*first.messages, message.text("assistant", reply),
                              message.text("user", "Why do you say so?")), settings)
        _, done2 = _turn(engine, follow)
        _, fresh = _turn(LocalEngine(loaded, mode=args.engine), follow)
        results[attempt] = {
            "turn1_ttft_s": done1.timings.first_token_s, "turn1_prompt_tokens": done1.usage.prompt_tokens,
            "turn1_image_tokens": done1.usage.image_tokens,
            "turn2_ttft_s": done2.timings.first_token_s, "turn2_prompt_tokens": done2.usage.prompt_tokens,
            "turn2_reused_tokens": done2.usage.reused_prompt_tokens,
            "turn2_fresh_ttft_s": fresh.timings.first_token_s,
            "fast_path": engine.uses_fast_path,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--image-size", type=int, default=1792)
    parser.add_argument("--text-words", type=int, default=1500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    results["wall_s"] = time.perf_counter() - start
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
