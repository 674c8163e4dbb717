"""`FastDecoder`: transformers prefill into a latent MLA cache, then graph-captured batch-1 decode.

The decoder reuses the loaded model's weights in place. Prefill runs the plain transformers forward (it
is compute-bound) with a cache adapter that writes the latents straight into our buffers, its norms,
SwiGLUs and experts' sums through `prefill_kernels` on a GPU; each decode
step then runs either eagerly (CPU) or as one CUDA graph replay (all layers, lm_head and the token
choice), captured once per decoder and sampling setting, with no compilation beyond Triton's JIT.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from kimi_cli.engine.fast import reference as ref
from kimi_cli.engine.fast.cache import LatentCache
from kimi_cli.engine.fast.graphs import GraphRunner
from kimi_cli.engine.fast.reference import rope_table
from kimi_cli.engine.fast.sampling import DeviceSampler, SamplingParams
from kimi_cli.engine.fast.step import (
    KernelConfig,
    StepImpl,
    TorchStep,
    TritonStep,
    is_quantized,
    triton_supported,
)
from kimi_cli.engine.fast.weights import UnsupportedModel, extract
from kimi_cli.model.compat import cache_kwarg


class FastDecoder:
    """Batch-1 decoder over a loaded `DeepseekV3Model` and its `lm_head`, holding up to `max_len` positions."""

    @torch.inference_mode()
    def __init__(
        self,
        language_model: nn.Module,
        lm_head: nn.Module,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
        *,
        backend: str = "auto",
        kernel_config: KernelConfig | None = None,
        fused_prefill: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = language_model
        self.weights = extract(language_model, lm_head)
        w = self.weights
        if w.embed.dtype != dtype or w.embed.device.type != self.device.type:
            raise UnsupportedModel(
                f"weights are {w.embed.dtype} on {w.embed.device}, not {dtype} on {self.device}"
            )
        self.cache = LatentCache.allocate(len(w.layers), max_len, w.kv_lora, w.rope_dim, self.device, dtype)
        self.cache.c.zero_()
        self.cache.k.zero_()
        self.rope = rope_table(w.inv_freq.to(self.device), w.rope_scale, max_len, dtype)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.token = torch.zeros(1, dtype=torch.long, device=self.device)
        self.impl: StepImpl = self._pick_impl(backend, kernel_config)
        #: Whether the prefill routes transformers' norms, SwiGLUs and experts through
        #: `prefill_kernels` (which themselves leave CPU tensors to transformers).
        self.fused_prefill = fused_prefill
        self.graphs = GraphRunner(self) if self.device.type == "cuda" else None

    def _pick_impl(self, backend: str, config: KernelConfig | None) -> StepImpl:
        use_triton = backend == "triton" or (
            backend == "auto"
            and self.device.type == "cuda"
            and triton_available()
            and triton_supported(self.weights)
        )
        if use_triton:
            self.backend = "triton"
            if is_quantized(self.weights):
                from kimi_cli.engine.fast.quant_step import make_quant_step

                return make_quant_step(self.weights, self.cache, self.rope, config)
            return TritonStep(self.weights, self.cache, self.rope, config)
        self.backend = "torch"
        return TorchStep(self.weights, self.cache, self.rope)

    @property
    def max_len(self) -> int:
        """Positions the cache holds."""
        return self.cache.max_len

    @property
    def length(self) -> int:
        """Positions currently cached."""
        return self.cache.length

    def reset(self) -> None:
        """Forget the cached conversation (buffers and captured graphs are kept)."""
        self.cache.length = 0

    def truncate(self, length: int) -> None:
        """Keep only the first `length` cached positions (to reuse a shared prompt prefix)."""
        if not 0 <= length <= self.cache.length:
            raise ValueError(f"cannot keep {length} of {self.cache.length} cached positions")
        self.cache.length = length

    @torch.inference_mode()
    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Run `inputs_embeds` [1, L, hidden] after what is cached; return float32 logits [vocab] of the last."""
        n = inputs_embeds.shape[1]
        start = self.cache.length
        if start + n >= self.max_len:
            raise ValueError(f"{start + n} positions leave no room to decode in a cache of {self.max_len}")
        from kimi_cli.engine.fast import dequant_kernels, prefill_kernels
        from kimi_cli.model.memory import prefill_chunks

        # in chunks, so that a long prompt's activations stay bounded (the memory plan counts on it);
        # norms, SwiGLUs and the experts' weighted sums through our kernels where they apply, and a
        # quantized model's weights widened in one pass each
        with (prefill_kernels.patched(self.model) if self.fused_prefill else nullcontext(),
              dequant_kernels.patched() if self.fused_prefill else nullcontext()):
            for lo, hi in prefill_chunks(n):
                chunk = inputs_embeds[:, lo:hi]
                at = start + lo
                positions = torch.arange(at, at + chunk.shape[1], device=inputs_embeds.device).unsqueeze(0)
                out = self.model(
                    inputs_embeds=chunk,
                    **cache_kwarg(self.model, self.cache.as_transformers_cache()),
                    position_ids=positions,
                    use_cache=True,
                )
                self.cache.length = at + chunk.shape[1]
            hidden = out.last_hidden_state[0, -1:]
            return ref.linear(hidden, self.weights.lm_head).float().view(-1)

    @torch.inference_mode()
    def feed(self, tokens: list[int]) -> torch.Tensor:
        """Run a few text tokens after what is cached through the decode step (its CUDA graph on a
        GPU: a few ms, against tens of ms for a transformers forward); float32 logits of the last."""
        if not tokens:
            raise ValueError("feed needs at least one token")
        self._check_room(len(tokens) + 1)
        ids = torch.tensor(tokens, device=self.device)
        for i in range(len(tokens)):
            logits = self.step(ids[i : i + 1])
        return logits

    def _check_room(self, steps: int) -> None:
        if self.cache.length + steps > self.max_len:
            raise ValueError(f"decoding {steps} more tokens overflows the cache of {self.max_len} positions")

    @torch.inference_mode()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Feed one token id ([1] on the device) at the next position; return float32 logits [vocab]."""
        self._check_room(1)
        self.pos.fill_(self.cache.length)
        self.token.copy_(token.view(1))
        if self.graphs is not None:
            logits = self.graphs.replay(None).clone()
        else:
            logits = self.impl.forward(self.token, self.pos, self.cache.length + 1)
        self.cache.length += 1
        return logits

    @torch.inference_mode()
    def generate_tokens(
        self,
        first_logits: torch.Tensor,
        sampler: SamplingParams | object | None,
        max_new_tokens: int,
        stop_ids: Iterable[int] = (),
        steer: Any = None,
    ) -> Iterator[int]:
        """Yield up to `max_new_tokens` token ids, the first chosen from `first_logits` (the prefill's).

        `sampler` is a `SamplingParams`, None (greedy) or any settings object with temperature, top_p and
        seed. Stops after yielding a stop id. On a GPU the next step is already queued while a token is
        read back, so the host round trip hides behind the device's work; the cache then holds every
        yielded token but possibly the last.

        With `steer` (a `kimi_cli.engine.steering.Steering`) every token is the steering's choice,
        forced or sampled from masked logits: each step replays the graph for the logits only and
        the token is chosen eagerly (the pipelined stream cannot know a forced token in advance).
        """
        params = SamplingParams.coerce(sampler)
        stops = set(stop_ids)
        if steer is not None:
            yield from self._steered_tokens(first_logits.float(), params, max_new_tokens, stops, steer)
            return
        if self.graphs is not None:
            chooser = self.graphs.sampler_for(params)
        else:
            chooser = DeviceSampler(params, first_logits.shape[-1], self.device)
        self.token.copy_(chooser(first_logits.float()))
        if self.graphs is not None:
            yield from self.graphs.stream(chooser, max_new_tokens, stops)
            return
        yield from self._eager_tokens(chooser, max_new_tokens, stops)

    def _eager_tokens(self, chooser: DeviceSampler, max_new_tokens: int, stops: set[int]) -> Iterator[int]:
        for i in range(max_new_tokens):
            tok = int(self.token.item())
            yield tok
            if tok in stops or i + 1 == max_new_tokens:
                return
            logits = self.step(self.token)
            self.token.copy_(chooser(logits))

    def _steered_tokens(self, logits: torch.Tensor, params: SamplingParams, max_new_tokens: int,
                        stops: set[int], steer: Any) -> Iterator[int]:
        chooser = DeviceSampler(params, logits.shape[-1], self.device)

        def sample(values: torch.Tensor) -> int:
            return int(chooser(values).item())

        for i in range(max_new_tokens):
            tok = steer.next(logits, sample)
            yield tok
            if tok in stops or i + 1 == max_new_tokens:
                return
            self.token.fill_(tok)
            logits = self.step(self.token)

    @torch.inference_mode()
    def capture(self, sampler: SamplingParams | None = None) -> float:
        """Capture the decode graph for `sampler` now (else on first use); return the seconds it took."""
        if self.graphs is None:
            return 0.0
        t0 = time.perf_counter()
        self.graphs.ensure(sampler)
        return time.perf_counter() - t0


def triton_available() -> bool:
    """Whether Triton imports (it ships with CUDA builds of torch)."""
    from kimi_cli.engine.fast.triton_kernels import HAVE_TRITON

    return HAVE_TRITON


def available(device: torch.device | str) -> bool:
    """Whether the fast path pays off on `device`: a CUDA GPU with Triton (elsewhere use the plain path)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and triton_available()
