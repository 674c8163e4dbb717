"""The vision tower's 2-D rope as one Triton kernel per tensor (GPU fast path only).

transformers' `apply_rotary_pos_emb_vision` upcasts q and k to float32 and runs about eight
elementwise kernels (casts, `rotate_half`'s slices and concatenation, two products, a sum) over
16384 positions x 16 heads x 72 in each of the 27 layers; on an H100 that is about 22 ms of a
1792x1792 image's 150 ms vision pass. This kernel reads each element and its rotation partner once,
computes `x * cos + rotate_half(x) * sin` in float32 and writes the result in the input dtype, the
same arithmetic (results can differ from transformers' by one rounding in the output dtype, where the
two sums are fused differently).

`patched()` routes transformers' kimi_k25 vision attention through it for CUDA tensors while the
fast path runs the vision tower, and puts the original back afterwards: the process-wide function
is replaced only inside the engine's own call. Anything else (CPU tensors) still goes through the
original function, so another thread that meets the patch in that window computes the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from kimi_cli.engine.fast.patching import Swap

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - CPU-only installs
    HAVE_TRITON = False

if HAVE_TRITON:

    @triton.jit
    def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, rows, heads, D: tl.constexpr, HALF: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
        """Rows of D values, one row per (position, head); cos/sin hold one row per position."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (r < rows) & (d < D)
        pos = r // heads
        x = tl.load(x_ptr + r * D + d, mask=mask, other=0.0).to(tl.float32)
        partner = tl.where(d < HALF, d + HALF, d - HALF)
        xp = tl.load(x_ptr + r * D + partner, mask=mask, other=0.0).to(tl.float32)
        xp = tl.where(d < HALF, -xp, xp)  # rotate_half: [-x2, x1]
        c = tl.load(cos_ptr + pos * D + d, mask=mask, other=0.0)
        s = tl.load(sin_ptr + pos * D + d, mask=mask, other=0.0)
        tl.store(out_ptr + r * D + d, (x * c + xp * s).to(out_ptr.dtype.element_ty), mask=mask)


def _rope_one(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kernel: Any = None) -> torch.Tensor:
    """One tensor's rope; `kernel` stands in for `_rope_kernel` (`prewarm` records the launch)."""
    kernel = _rope_kernel if kernel is None else kernel
    x = x.contiguous()
    d, heads = x.shape[-1], x.shape[-2]
    rows = x.numel() // d
    out = torch.empty_like(x)
    block_r = 32
    # grid and block in plain Python: `prewarm` records this launch where Triton is not installed
    kernel[(-(-rows // block_r),)](x, cos, sin, out, rows, heads, D=d, HALF=d // 2,
                                   BLOCK_R=block_r, BLOCK_D=1 << (d - 1).bit_length())
    return out


def fused_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in for `apply_rotary_pos_emb_vision` (q, k: [1, S, H, D]; cos, sin: [S, D])."""
    if not (HAVE_TRITON and q.is_cuda) or q.dim() != 4 or q.shape[0] != 1:
        return original()(q, k, cos, sin)
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    return _rope_one(q, cos, sin), _rope_one(k, cos, sin)


def _targets() -> list[tuple[Any, str, Any]]:
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    return [(kimi_k25, "apply_rotary_pos_emb_vision", fused_rope)]


_SWAP = Swap(_targets)


def original() -> Any:
    """transformers' own `apply_rotary_pos_emb_vision`."""
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    return _SWAP.original(kimi_k25, "apply_rotary_pos_emb_vision")


@contextmanager
def patched() -> Iterator[bool]:
    """Inside the block, transformers' kimi_k25 vision rope is `fused_rope` (re-entrant; restored after).

    Yields False (and patches nothing) without Triton.
    """
    if not HAVE_TRITON:
        yield False
        return
    with _SWAP.active():
        yield True
