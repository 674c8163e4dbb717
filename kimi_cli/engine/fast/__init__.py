"""Fast batch-1 decode for Kimi-VL's DeepSeek-V3 language model (absorbed MLA, in-place MoE, CUDA graphs).

Usage, with `lm = model.model.language_model` and `model.lm_head` of a loaded Kimi-VL model::

    dec = FastDecoder(lm, model.lm_head, max_len=bucket_length(prompt + max_new), device="cuda",
                      dtype=torch.bfloat16)
    logits = dec.prefill(inputs_embeds)            # [1, L, hidden] -> float32 [vocab]
    for token in dec.generate_tokens(logits, SamplingParams(0.8, 0.95, seed=1), 4096, stop_ids):
        ...

Names resolve lazily so that importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kimi_cli.engine.fast.cache import bucket_length
    from kimi_cli.engine.fast.decoder import FastDecoder, available
    from kimi_cli.engine.fast.sampling import SamplingParams
    from kimi_cli.engine.fast.weights import UnsupportedModel

__all__ = ["FastDecoder", "SamplingParams", "UnsupportedModel", "available", "bucket_length"]

_WHERE = {
    "FastDecoder": "decoder",
    "available": "decoder",
    "SamplingParams": "sampling",
    "bucket_length": "cache",
    "UnsupportedModel": "weights",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
