"""No compile in front of a user: the fast path's GPU kernels are compiled while the weights load.

`KernelWarmup` is the loader's `before_weights` hook (`make_local_engine` passes one): once the
device, dtype and weight format are known it starts `engine.fast.prewarm` in a background thread, for
every context bucket a turn may use, so Triton's compile overlaps the 10-20 s of weight reading; the
engine waits for it before its first launch. A machine's first run says so once on stderr.
`run_warmup` is `kimi warmup`: the same load and compile for every bucket, then one short turn that
captures and replays a decode step, summed up in one line.
"""

from __future__ import annotations

import sys
import time
from typing import Any

#: What a Kimi-VL-A3B checkpoint's config says when it leaves out `max_position_embeddings`.
DEFAULT_CONTEXT = 131072


def context_buckets(low_tokens: int, context: int) -> range:
    """The cache lengths (`engine.fast.cache` buckets) a turn of at least `low_tokens` positions may
    get, up to the model's context: smallest first, since a short turn is the likeliest."""
    from kimi_cli.engine.fast.cache import BUCKET, bucket_length

    return range(bucket_length(max(low_tokens, 1)), bucket_length(max(context, low_tokens, 1)) + 1, BUCKET)


def model_shape(checkpoint: Any, dtype: Any, fmt: str) -> Any:
    """The `prewarm.ModelShape` of a checkpoint (its config.json only: nothing loaded yet)."""
    from transformers import DeepseekV3Config

    from kimi_cli.engine.fast.prewarm import ModelShape
    from kimi_cli.model.config import text_config_dict

    heads = int(checkpoint.vision.get("num_attention_heads", 16))
    head_dim = int(checkpoint.vision.get("hidden_size", 1152)) // heads
    return ModelShape(DeepseekV3Config(**text_config_dict(checkpoint)), dtype, fmt, heads, head_dim)


def note(line: str) -> None:
    """A `kimi: note:` line on stderr, as the load's other notes."""
    sys.stderr.write(f"kimi: note: {line}\n")
    sys.stderr.flush()


class KernelWarmup:
    """`load_model(before_weights=...)`: starts compiling when the load will run the fast path."""

    def __init__(self, decoder: str = "auto", low_tokens: int = 1) -> None:
        self.decoder, self.low_tokens = decoder, low_tokens
        self.job: Any = None  # the `prewarm.Warmup`, once started
        self.fmt = self.gpu = ""
        self.context = 0

    def __call__(self, checkpoint: Any, device: str, dtype: Any, fmt: str) -> None:
        """Start the background compile (nothing off CUDA, with `--decoder plain`, or without Triton)."""
        if self.decoder == "plain" or not str(device).startswith("cuda"):
            return
        import torch

        from kimi_cli.engine.fast import available, prewarm

        if not available(device):
            return
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        self.context = int(checkpoint.text.get("max_position_embeddings") or DEFAULT_CONTEXT)
        self.fmt, self.gpu = fmt, torch.cuda.get_device_name(index)
        shape = model_shape(checkpoint, dtype, fmt)
        buckets = context_buckets(self.low_tokens, self.context)
        self.job = prewarm.start(lambda: prewarm.warm(shape, buckets, index, notify=note))


def run_warmup(settings: Any) -> str:
    """`kimi warmup`: load, compile every kernel for every bucket, capture and replay a decode step;
    returns the one-line summary (or why there is nothing to do on this machine)."""
    from kimi_cli.engine.fast.decoder import triton_available

    reason = _nothing_to_compile(settings.device, triton_available)
    if reason:
        return f"kimi warmup: nothing to compile: {reason}"
    from kimi_cli.app.engines import load_local, local_engine

    hook = KernelWarmup(decoder="fast", low_tokens=1)
    loaded = load_local(settings, before_weights=hook)
    engine = local_engine(loaded, "fast")
    result = hook.job.wait() if hook.job is not None else None
    if result is None:
        raise _failed(hook)
    began = time.perf_counter()
    warm_turn(engine)
    turn_s = time.perf_counter() - began
    engine.close()
    how = "compiled" if result.first_run else "found in the cache"
    return (f"kimi warmup: {result.variants} kernel variants for {hook.gpu} ({hook.fmt}, contexts up to "
            f"{hook.context}) {how} in {result.seconds:.1f} s; model load {loaded.load_seconds:.1f} s; "
            f"a decode step captured and replayed in {turn_s:.1f} s")


def _nothing_to_compile(device: str, has_triton: Any) -> str | None:
    if device != "auto" and not device.startswith("cuda"):
        return f"--device {device} runs no GPU kernels"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (the CPU path runs no GPU kernels)"
    if not has_triton():
        return "Triton is not installed (the GPU runs the plain transformers path)"
    return None


def _failed(hook: KernelWarmup) -> Exception:
    from kimi_cli.errors import GenerationError

    error = getattr(hook.job, "error", None)
    detail = f": {type(error).__name__}: {error}" if error is not None else ""
    return GenerationError(f"compiling the GPU kernels failed{detail}", hint="rerun with --debug for details")


def warm_turn(engine: Any) -> float:
    """Generate two tokens after a small picture and a word (the vision tower, a prefill, and a
    captured, replayed decode step); returns the seconds it took. A failed generation is raised."""
    from PIL import Image

    from kimi_cli.conversation import GenerationSettings, Message, Request
    from kimi_cli.errors import GenerationError
    from kimi_cli.events.types import ErrorEvent
    from kimi_cli.media.types import ImagePart, TextPart

    picture = Image.new("RGB", (56, 56), (128, 96, 64))
    message = Message(role="user", parts=(ImagePart(picture, "warm-up"), TextPart("Hi")))
    start = time.perf_counter()
    for event in engine.stream(Request((message,), GenerationSettings(max_new_tokens=2, temperature=0.0))):
        if isinstance(event, ErrorEvent):
            raise GenerationError(f"warm-up generation failed: {event.message}", hint=event.hint)
    return time.perf_counter() - start
