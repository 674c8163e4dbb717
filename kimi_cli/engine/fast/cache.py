"""The latent MLA cache: per layer, the normalised compressed kv [max_len, 512] and the roped k_pe [max_len, 64].

transformers' own MLA cache stores exactly these two tensors (`past_key_values.update(kv_nope, k_rot)` with
`kv_nope` after `kv_a_layernorm` and `k_rot` after the rotary embedding), so a prefill run through the plain
model can write straight into our buffers: `LatentCache.as_transformers_cache()` returns a transformers
`Cache` whose layers copy each update into the preallocated buffers and hand back views of the live prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

BUCKET = 1024


def bucket_length(tokens: int, bucket: int = BUCKET) -> int:
    """Round a request's length (prompt + max new tokens) up to a multiple of `bucket`."""
    if tokens <= 0:
        raise ValueError("a cache must hold at least one token")
    return -(-tokens // bucket) * bucket


@dataclass
class LatentCache:
    """Preallocated latent buffers for every layer; `length` is the number of cached positions."""

    c: torch.Tensor  # [layers, max_len, kv_lora]
    k: torch.Tensor  # [layers, max_len, rope]
    length: int = 0

    @classmethod
    def allocate(
        cls, layers: int, max_len: int, kv_lora: int, rope: int, device: torch.device, dtype: torch.dtype
    ) -> LatentCache:
        """Allocate (uninitialised) buffers for `layers` layers and `max_len` positions."""
        c = torch.empty(layers, max_len, kv_lora, device=device, dtype=dtype)
        k = torch.empty(layers, max_len, rope, device=device, dtype=dtype)
        return cls(c=c, k=k)

    @property
    def max_len(self) -> int:
        """How many positions the buffers hold."""
        return self.c.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return self.c.numel() * self.c.element_size() + self.k.numel() * self.k.element_size()

    def as_transformers_cache(self) -> Cache:
        """A transformers `Cache` that writes prefill updates into these buffers from `length` on."""
        layers = [_LatentLayer(self, i) for i in range(self.c.shape[0])]
        return Cache(layers=layers)


class _LatentLayer(DynamicLayer):
    """A transformers cache layer backed by one layer of a `LatentCache` (no concatenation, no copy back)."""

    def __init__(self, owner: LatentCache, index: int) -> None:
        super().__init__()
        self.owner = owner
        self.index = index
        self.start = owner.length
        self.seen = 0
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to do: the buffers exist already."""
        self.dtype, self.device = key_states.dtype, key_states.device

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy `[1, 1, n, 512]` latents and `[1, 1, n, 64]` roped keys in; return the live prefix."""
        n = key_states.shape[-2]
        begin = self.start + self.seen
        end = begin + n
        if end > self.owner.max_len:
            raise ValueError(f"prefill of {end} positions does not fit a cache of {self.owner.max_len}")
        c, k = self.owner.c[self.index], self.owner.k[self.index]
        c[begin:end].copy_(key_states.reshape(n, -1))
        k[begin:end].copy_(value_states.reshape(n, -1))
        self.seen += n
        self.keys = c[:end].view(1, 1, end, c.shape[-1])
        self.values = k[:end].view(1, 1, end, k.shape[-1])
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Cached positions, including those written before this prefill."""
        return self.start + self.seen

    def get_max_length(self) -> int:
        """The buffers' capacity."""
        return self.owner.max_len

    def reset(self) -> None:
        """Forget what this adapter wrote (the buffers themselves are left as they are)."""
        self.seen = 0
