"""The quantized modules' weights widened in one pass on the GPU, for the fast path's prefill.

A quantized model's prefill runs transformers' forward over our `QuantLinear` and `QuantExperts`
modules (model/quantized.py), which dequantize each matrix, or a group of experts, right before its
product. The formats' own `dequantize` (model/formats) is the reference: a chain of torch operations,
each a pass over float32 temporaries (int4: unpack, widen, expand the scales, multiply, cast). Here one
Triton kernel reads the stored bytes and scales once and writes the result in the model's dtype.

It computes what the formats compute, bit for bit: each value is widened exactly to float32, times its
float32 scale (one rounding), then rounded to the output dtype. `patched()` routes
`model.quantized.dequantize` through it for CUDA tensors (the decoder's prefill enters it together
with `prefill_kernels.patched`); anything else, and every machine without Triton, keeps the reference.
"""

from __future__ import annotations

import os
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

#: the kernel's format codes (int8: a scale per row; fp8: 128 x 128 block scales; int4: two values a
#: byte, low nibble first, a scale per row and 128 columns)
CODES = {"int8": 0, "fp8": 1, "int4": 2}
#: fp8's and int4's scale group along K (and fp8's along N)
GROUP = 128
BLOCK_R, BLOCK_K = 16, 256
#: Under Triton's interpreter (the CPU tests) CPU tensors take the kernel too.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

if HAVE_TRITON:

    @triton.jit(do_not_specialize=["rows", "n", "s_rows", "s_cols"])
    def _dequant_kernel(w_ptr, s_ptr, out_ptr, rows, n, s_rows, s_cols, K: tl.constexpr, FMT: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[r, k] = value(r, k) * scale(r, k) for the `rows` rows (a stack of matrices of `n` rows,
        one after another) of K columns. Scales: int8 `[rows]`; int4 `[rows, s_cols]`; fp8 `[stack,
        s_rows, s_cols]` (a block of 128 rows by 128 columns each)."""
        r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        ok = (r < rows)[:, None] & (k < K)[None, :]
        if FMT == 2:
            b = tl.load(w_ptr + r[:, None] * (K // 2) + (k // 2)[None, :], mask=ok, other=0)
            q = tl.where((k % 2 == 0)[None, :], b & 15, b >> 4).to(tl.int32) - 8
            s = tl.load(s_ptr + r[:, None] * s_cols + (k // 128)[None, :], mask=ok, other=0.0)
        else:
            q = tl.load(w_ptr + r[:, None] * K + k[None, :], mask=ok)  # masked lanes are never stored
            if FMT == 0:
                s = tl.load(s_ptr + r, mask=r < rows, other=0.0)[:, None]
            else:
                block = (r // n) * s_rows + (r % n) // 128
                s = tl.load(s_ptr + block[:, None] * s_cols + (k // 128)[None, :], mask=ok, other=0.0)
        v = q.to(tl.float32) * s
        tl.store(out_ptr + r[:, None] * K + k[None, :], v.to(out_ptr.dtype.element_ty, fp_downcast_rounding="rtne"),
                 mask=ok)


def _scale(fmt: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return parts["weight_scale_inv" if fmt == "fp8" else "weight_scale"]


def covers(fmt: Any, parts: dict[str, torch.Tensor], dtype: torch.dtype) -> bool:
    """Whether the kernel widens these parts (else the format's own `dequantize` does)."""
    name = getattr(getattr(fmt, "info", None), "name", None)
    if not HAVE_TRITON or name not in CODES or dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    w = parts.get("weight")
    s = parts.get("weight_scale_inv" if name == "fp8" else "weight_scale")
    if w is None or s is None or w.dim() < 2 or not (w.is_contiguous() and s.is_contiguous()):
        return False
    if not ((w.is_cuda and s.is_cuda) or _INTERPRET) or s.dtype != torch.float32:
        return False
    return w.numel() < 2**31 and s.numel() < 2**31


def dequantize(fmt: Any, parts: dict[str, torch.Tensor], dtype: torch.dtype, kernel: Any = None) -> torch.Tensor:
    """`fmt.dequantize(parts, dtype)`, by the kernel where it `covers` them: `[..., N, K]` in `dtype`.
    `kernel`: what to launch instead of `_dequant_kernel` (the warm-up's recorder; no check then)."""
    if kernel is None and not covers(fmt, parts, dtype):
        return fmt.dequantize(parts, dtype)
    name = fmt.info.name
    w, s = parts["weight"], _scale(name, parts)
    *stack, n, stored = w.shape
    k = stored * 2 if name == "int4" else stored
    rows = w.numel() // stored
    out = torch.empty(*stack, n, k, dtype=dtype, device=w.device)
    if rows == 0 or k == 0:
        return out
    s_rows, s_cols = (s.shape[-2], s.shape[-1]) if name == "fp8" else (1, s.shape[-1] if name == "int4" else 1)
    grid = (-(-rows // BLOCK_R), -(-k // BLOCK_K))
    (kernel or _dequant_kernel)[grid](w, s, out, rows, n, s_rows, s_cols, K=k, FMT=CODES[name], BLOCK_R=BLOCK_R,
                                      BLOCK_K=BLOCK_K)
    return out


def _targets() -> list[tuple[Any, str, Any]]:
    from kimi_cli.model import quantized

    return [(quantized, "dequantize", dequantize)]


_SWAP = Swap(_targets)


@contextmanager
def patched() -> Iterator[bool]:
    """Inside the block the quantized modules dequantize through the kernel (re-entrant); yields False
    (patching nothing) without Triton."""
    if not HAVE_TRITON:
        yield False
        return
    with _SWAP.active():
        yield True
