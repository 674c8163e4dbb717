"""CUDA-graph capture and replay of whole decode steps, and the pipelined token stream built on them.

One graph holds a full step: embedding lookup, every layer, lm_head, the token choice, and `pos += 1`.
It reads the token and position from device buffers and writes the chosen token back, so replays can be
queued back to back; the host only reads tokens out, one step behind the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from kimi_cli.engine.fast.sampling import DeviceSampler, SamplingParams

if TYPE_CHECKING:
    from kimi_cli.engine.fast.decoder import FastDecoder

GraphKey = tuple[float, float] | None


class GraphRunner:
    """Captured step graphs of one decoder, keyed by sampling setting (None: logits only).

    Its methods run inside the decoder's `torch.inference_mode()` (all buffers are inference tensors).
    """

    def __init__(self, decoder: FastDecoder) -> None:
        self.dec = decoder
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[GraphKey, torch.cuda.CUDAGraph] = {}
        self.logits: dict[GraphKey, torch.Tensor] = {}
        self.samplers: dict[GraphKey, DeviceSampler] = {}

    def sampler_for(self, params: SamplingParams, reseed: bool = True) -> DeviceSampler:
        """The persistent sampler whose noise buffer the graph for `params` reads.

        With `reseed` (the start of a generation) an existing sampler restarts from `params.seed`; a
        capture in the middle of a generation must not reseed, or the stream would repeat its noise.
        """
        key = params.key()
        sampler = self.samplers.get(key)
        if sampler is None:
            sampler = DeviceSampler(params, self.dec.weights.lm_head.shape[0], self.dec.device)
            self.samplers[key] = sampler
        elif reseed:
            sampler.params = params
            if params.seed is not None:
                sampler.generator.manual_seed(params.seed)
        return sampler

    def _body(self, sampler: DeviceSampler | None) -> torch.Tensor:
        dec = self.dec
        logits = dec.impl.forward(dec.token, dec.pos, dec.max_len)
        if sampler is not None:
            dec.token.copy_(sampler.choose(logits))
        dec.pos.add_(1)
        return logits

    def ensure(self, params: SamplingParams | None) -> GraphKey:
        """Capture the graph for `params` unless it exists; return its key."""
        key = None if params is None else params.key()
        if key in self.graphs:
            return key
        dec = self.dec
        sampler = None if params is None else self.sampler_for(params, reseed=False)
        saved_pos, saved_token = dec.pos.clone(), dec.token.clone()
        dec.pos.fill_(min(dec.cache.length, dec.max_len - 1))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(side):
            for _ in range(2):  # compiles Triton kernels and settles the allocator
                self._body(sampler)
                dec.pos.sub_(1)
            # capture_begin/end rather than `torch.cuda.graph`, whose entry synchronizes the device and
            # empties the allocator's caches: this capture's host work overlaps the prefill still
            # running on the GPU, and the next prefill finds its memory still cached.
            # thread_local: the engine decodes in a worker thread while others may touch CUDA.
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                logits = self._body(sampler)
            except BaseException:
                with contextlib.suppress(Exception):
                    graph.capture_end()
                raise
            graph.capture_end()
        torch.cuda.current_stream().wait_stream(side)
        dec.pos.copy_(saved_pos)
        dec.token.copy_(saved_token)
        self.logits[key] = logits
        self.graphs[key] = graph
        return key

    def replay(self, params: SamplingParams | None) -> torch.Tensor:
        """Run one captured step; return the graph's logits buffer (overwritten by the next replay)."""
        key = self.ensure(params)
        if params is not None:
            self.samplers[key].refresh()
        self.graphs[key].replay()
        return self.logits[key]

    def stream(self, sampler: DeviceSampler, max_new_tokens: int, stops: set[int]) -> Iterator[int]:
        """Yield tokens, the first already in `dec.token`; each step is queued before the last is read.

        A missing graph is captured before the first token (chosen from the prefill's logits) is read:
        its host work then overlaps the prefill on the GPU, and the stream after the first token never
        stalls on a capture (tokens/s as the user sees them stay the decode rate).
        """
        dec = self.dec
        params = sampler.params
        first_host = torch.empty(1, dtype=torch.long, pin_memory=True)
        first_host.copy_(dec.token, non_blocking=True)
        first_ready = torch.cuda.Event()
        first_ready.record()  # before the capture's warm-up steps, which the token need not wait for
        if max_new_tokens > 1:
            self.ensure(params)
        first_ready.synchronize()
        first = int(first_host)
        yield first
        if first in stops or max_new_tokens <= 1:
            return
        dec.pos.fill_(dec.cache.length)
        host = torch.empty(max_new_tokens, dtype=torch.long, pin_memory=True)
        done = [torch.cuda.Event() for _ in range(2)]
        replays, pending = 0, None
        try:
            for i in range(1, max_new_tokens):
                dec._check_room(replays + 1)
                self.replay(params)  # feeds token i-1, leaves token i in dec.token
                replays += 1
                host[i : i + 1].copy_(dec.token, non_blocking=True)
                done[i % 2].record()
                if pending is not None:
                    done[pending % 2].synchronize()
                    tok = int(host[pending])
                    yield tok
                    if tok in stops:
                        return
                pending = i
            if pending is not None:
                done[pending % 2].synchronize()
                yield int(host[pending])
        finally:
            dec.cache.length += replays
