"""Batch-1 decode speed at a given context: plain `generate()`, static cache + compile, our fast decoder.

The context is random token ids (seeded): prefill cost and decode speed do not depend on the text.
For `generate()` a streamer records the host clock at each token (generate reads every token back,
so the device has finished it): decode tok/s = (tokens - 1) / (last token - first token), prefill
excluded. The fast decoder is timed as a user gets it: `generate_tokens`, one host read per token.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from kimi_cli.bench.timing import free_cuda, now, peak_gib, reset_peak


@dataclass
class DecodeRun:
    """One engine at one context length."""

    engine: str
    context: int
    tokens: int = 0
    tokens_per_s: float | None = None
    prefill_s: float | None = None
    first_call_s: float | None = None  # static: the first (compiling) call; fast: graph capture
    peak_gib: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def random_context(vocab: int, context: int, device: Any) -> Any:
    """Random token ids [1, context], seeded by the length, away from the special-token range."""
    import torch

    g = torch.Generator().manual_seed(context)
    hi = max(vocab - 1000, 2)
    lo = min(1000, hi - 1)
    return torch.randint(lo, hi, (1, context), generator=g).to(device)


class _TokenClock:
    """A transformers streamer that notes the time of each `put` (prompt first, then each token)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        """Called by `generate()` with the prompt, then with each new token (already on the host)."""
        self.times.append(time.perf_counter())

    def end(self) -> None:
        """Called once generation stops."""

    def rate(self) -> tuple[float | None, float | None]:
        """(decode tok/s, prefill s) from the recorded times."""
        if len(self.times) < 3:
            return None, None
        return (len(self.times) - 2) / (self.times[-1] - self.times[1]), self.times[1] - self.times[0]


def _generation_config(model: Any, n: int, static: bool, scores: bool) -> Any:
    cfg = copy.deepcopy(model.generation_config)
    cfg.eos_token_id = None  # random weights may write <|im_end|>; time exactly n tokens
    cfg.pad_token_id = 0
    cfg.do_sample = False
    cfg.max_new_tokens = n
    cfg.output_scores = scores
    cfg.return_dict_in_generate = True
    cfg.cache_implementation = "static" if static else None
    for name in ("temperature", "top_p", "top_k"):
        setattr(cfg, name, None)
    return cfg


def generate_once(model: Any, ids: Any, n: int, static: bool = False, scores: bool = False) -> tuple[Any, _TokenClock]:
    """One greedy `generate()` call with a token clock."""
    import torch

    clock = _TokenClock()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             generation_config=_generation_config(model, n, static, scores), streamer=clock)
    return out, clock


def plain_decode(model: Any, ids: Any, n: int) -> tuple[DecodeRun, list[int], list[Any]]:
    """Plain greedy `generate()` (dynamic cache): the run, its tokens and its float32 logits."""
    run = DecodeRun("plain", ids.shape[1])
    reset_peak()
    out, clock = generate_once(model, ids, n, scores=True)
    run.tokens_per_s, run.prefill_s = clock.rate()
    run.tokens, run.peak_gib = n, peak_gib()
    tokens = out.sequences[0, ids.shape[1]:].tolist()
    logits = [s[0].float() for s in out.scores]
    del out
    free_cuda()
    return run, tokens, logits


def static_decode(model: Any, ids: Any, n: int) -> DecodeRun:
    """transformers' static cache (auto torch.compile + CUDA graphs): first call, then a timed warm call."""
    run = DecodeRun("static", ids.shape[1], tokens=n)
    reset_peak()
    t0 = now()
    try:
        generate_once(model, ids, n, static=True)
        run.first_call_s = now() - t0
        _, clock = generate_once(model, ids, n, static=True)
    except Exception as exc:  # noqa: BLE001 - a compile failure is a result too
        run.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        return run
    run.tokens_per_s, run.prefill_s = clock.rate()
    run.peak_gib = peak_gib()
    free_cuda()
    return run


@dataclass(frozen=True)
class DecodeTarget:
    """What the decode benchmark runs: a model with `generate()`, its language model and lm_head."""

    model: Any  # Kimi_K25ForConditionalGeneration or DeepseekV3ForCausalLM
    language_model: Any
    lm_head: Any
    device: Any
    dtype: Any

    @classmethod
    def of_loaded(cls, loaded: Any) -> DecodeTarget:
        """The language model of a loaded Kimi-VL checkpoint (`LoadedModel`)."""
        m = loaded.model
        return cls(m, m.model.language_model, m.lm_head, m.device, loaded.dtype)

    @classmethod
    def of_causal_lm(cls, model: Any) -> DecodeTarget:
        """A bare `DeepseekV3ForCausalLM` (random full-size weights built on the GPU, say)."""
        return cls(model, model.model, model.lm_head, model.device, next(model.parameters()).dtype)


def new_fast_decoder(target: DecodeTarget | Any, positions: int) -> Any:
    """The engine's `FastDecoder` over the target's language model, sized to `positions` (bucketed).

    Takes a `DecodeTarget` or a `LoadedModel`.
    """
    from kimi_cli.engine.fast import FastDecoder, bucket_length

    t = target if isinstance(target, DecodeTarget) else DecodeTarget.of_loaded(target)
    return FastDecoder(t.language_model, t.lm_head, bucket_length(positions), t.device, t.dtype)


def fast_decode(target: DecodeTarget | Any, embeds: Any, n: int) -> tuple[DecodeRun, list[int], Any]:
    """Our decoder: prefill `embeds`, capture, stream n greedy tokens; the run, tokens and decoder."""
    from kimi_cli.engine.fast import SamplingParams

    run = DecodeRun("fast", embeds.shape[1], tokens=n)
    reset_peak()
    dec = new_fast_decoder(target, embeds.shape[1] + 2 * n + 8)
    t0 = now()
    first = dec.prefill(embeds)
    run.prefill_s = now() - t0
    run.first_call_s = dec.capture(SamplingParams())
    t0 = now()
    tokens = list(dec.generate_tokens(first, SamplingParams(), n))
    elapsed = now() - t0
    run.tokens_per_s = (len(tokens) - 1) / elapsed if len(tokens) > 1 else None
    run.peak_gib = peak_gib()
    run.notes.append(f"backend {dec.backend}, cache {dec.max_len} positions")
    return run, tokens, dec


def replay_rate(dec: Any, steps: int) -> float:
    """Tokens/s of back-to-back greedy graph replays (no host reads), continuing after the cache (CUDA).

    The replays write positions `dec.length` .. `dec.length + steps - 1`: a cache too short for them is
    a `ValueError` (the kernels do not bound the position; past the cache they would write elsewhere).
    """
    if dec.length + max(steps, 3) > dec.max_len:
        raise ValueError(f"{steps} replays after {dec.length} cached positions need a cache of "
                         f"{dec.length + max(steps, 3)} positions, not {dec.max_len}")
    import torch

    from kimi_cli.engine.fast import SamplingParams

    params = SamplingParams()
    with torch.inference_mode():
        dec.graphs.ensure(params)
        dec.pos.fill_(dec.length)
        for _ in range(3):
            dec.graphs.replay(params)
        dec.pos.fill_(dec.length)
        t0 = now()
        for _ in range(steps):
            dec.graphs.replay(params)
        return steps / (now() - t0)
