"""The vision tower's attention as one Triton kernel per layer (GPU fast path only).

MoonViT attends over every patch of an image at once: a 1792x1792 image is one sequence of 16,384
positions, 16 heads of 72. Profiled on the H200, torch's SDPA (cuDNN's flash kernel) takes 3.4 ms
per layer, 93 of the tower's 125 ms: 360 TFLOP/s, because 72 is no size its kernels are built for.
This kernel is flash attention (online softmax, no score matrix in memory) over the packed
sequences of `cu_seqlens` (images and clips side by side, as flash attention's varlen form takes
them) with the head split in two products: the first power of two of it (64) and the rest padded to
16, so a head of 72 costs 80 columns of work, not 128.

It reads q, k and v in the projections' own [positions, heads, dim] layout (no transposes) and writes
[positions, heads, dim], which is the output projection's input as it is. Scores and the softmax are
float32, the probabilities are rounded to the input dtype for the second product (as flash kernels do),
and the output is normalised in float32 and rounded once.

`patched()` routes transformers' `Kimi_K25VisionAttention.forward` through it while the fast path runs
the tower, for CUDA bf16/fp16 tensors whose sequence bounds are on the device with their longest length
given (`image_features` hands both over); anything else (the CPU, flash attention requested, another
head size) takes transformers' own forward.
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

_HALF = (torch.bfloat16, torch.float16)
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
#: Query rows and key columns per program and per step; measured on the H200 (benchmarks/vision_attn_probe.py).
BLOCK_M, BLOCK_N, WARPS, STAGES = 128, 64, 8, 3
#: Whether the fast path's vision call uses the kernel by default. Off: on the H200 (Triton 3.6) its first
#: build computed wrong values at the tower's real size (heads of 72, 16,384 positions) and then faulted,
#: although it matches attention in Triton's interpreter and at the tiny checkpoint's heads of 16 on the
#: GPU; until a GPU run shows it right and faster than cuDNN's kernel, transformers' SDPA stays.
ENABLED = False
_LOG2E = 1.4426950408889634

if HAVE_TRITON:

    @triton.jit
    def _cols(ptr, rows, head, stride_n, C0: tl.constexpr, WIDTH: tl.constexpr, D: tl.constexpr,
              n_mask, MASKED: tl.constexpr):
        """Columns [C0, C0 + WIDTH) of a block of rows, [BLOCK, WIDTH] (zero past D, and on masked rows)."""
        c = C0 + tl.arange(0, WIDTH)[None, :]
        ptrs = ptr + rows.to(tl.int64)[:, None] * stride_n + head * D + c
        if MASKED:
            return tl.load(ptrs, mask=n_mask[:, None] & (c < D), other=0.0)
        if C0 + WIDTH > D:
            return tl.load(ptrs, mask=c < D, other=0.0)
        return tl.load(ptrs)

    @triton.jit
    def _attn_block(q0, q1, k_ptr, v_ptr, start, n0, length, head, stride_kn, stride_vn,
                    m_i, l_i, acc0, acc1, qk_scale, D0: tl.constexpr, D1: tl.constexpr, D: tl.constexpr,
                    TAIL: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < length
        rows = start + offs_n
        s = tl.dot(q0, tl.trans(_cols(k_ptr, rows, head, stride_kn, 0, D0, D, n_mask, MASKED)))
        if TAIL:
            s = tl.dot(q1, tl.trans(_cols(k_ptr, rows, head, stride_kn, D0, D1, D, n_mask, MASKED)), s)
        s = s * qk_scale
        if MASKED:
            s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(v_ptr.dtype.element_ty)
        acc0 = tl.dot(p, _cols(v_ptr, rows, head, stride_vn, 0, D0, D, n_mask, MASKED), acc0 * alpha[:, None])
        if TAIL:
            acc1 = tl.dot(p, _cols(v_ptr, rows, head, stride_vn, D0, D1, D, n_mask, MASKED),
                          acc1 * alpha[:, None])
        return m_new, l_i, acc0, acc1

    @triton.jit(do_not_specialize=["qk_scale"])
    def _vision_attn_kernel(q_ptr, k_ptr, v_ptr, o_ptr, cu_ptr, stride_qn, stride_kn, stride_vn, stride_on, qk_scale, D: tl.constexpr,
                            D0: tl.constexpr, D1: tl.constexpr, TAIL: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, LOOP_WHILE: tl.constexpr):
        """o[rows of one sequence, head] = softmax(q k^T * scale) v over that sequence's rows.

        Grid: (query blocks of the longest sequence, heads, sequences); `qk_scale` is scale * log2(e).
        """
        seq = tl.program_id(2)
        head = tl.program_id(1)
        start = tl.load(cu_ptr + seq)
        length = tl.load(cu_ptr + seq + 1) - start
        m0 = tl.program_id(0) * BLOCK_M
        if m0 < length:
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_mask = offs_m < length
            q0 = _cols(q_ptr, start + offs_m, head, stride_qn, 0, D0, D, m_mask, True)
            if TAIL:  # noqa: SIM108 - a constexpr branch
                q1 = _cols(q_ptr, start + offs_m, head, stride_qn, D0, D1, D, m_mask, True)
            else:  # unused: the tail's products are compiled out
                q1 = q0
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            acc0 = tl.zeros([BLOCK_M, D0], dtype=tl.float32)
            acc1 = tl.zeros([BLOCK_M, D1], dtype=tl.float32)
            full = (length // BLOCK_N) * BLOCK_N
            if LOOP_WHILE:  # Triton's interpreter takes no loaded bound in `range` (a 1-element array)
                n0 = 0
                while n0 < full:
                    m_i, l_i, acc0, acc1 = _attn_block(q0, q1, k_ptr, v_ptr, start, n0, length, head, stride_kn,
                                                       stride_vn, m_i, l_i, acc0, acc1,
                                                       qk_scale, D0, D1, D, TAIL, BLOCK_N, False)
                    n0 += BLOCK_N
            else:  # a `for` is what Triton software-pipelines
                for n0 in range(0, full, BLOCK_N):
                    m_i, l_i, acc0, acc1 = _attn_block(q0, q1, k_ptr, v_ptr, start, n0, length, head, stride_kn,
                                                       stride_vn, m_i, l_i, acc0, acc1,
                                                       qk_scale, D0, D1, D, TAIL, BLOCK_N, False)
            if full < length:
                m_i, l_i, acc0, acc1 = _attn_block(q0, q1, k_ptr, v_ptr, start, full, length, head, stride_kn,
                                                   stride_vn, m_i, l_i, acc0, acc1,
                                                   qk_scale, D0, D1, D, TAIL, BLOCK_N, True)
            rows = (start + offs_m).to(tl.int64)[:, None]
            base = o_ptr + rows * stride_on + head * D
            d0 = tl.arange(0, D0)[None, :]
            d1 = D0 + tl.arange(0, D1)[None, :]
            inv = 1.0 / l_i[:, None]
            tl.store(base + d0, (acc0 * inv).to(o_ptr.dtype.element_ty), mask=m_mask[:, None] & (d0 < D))
            if TAIL:
                tl.store(base + d1, (acc1 * inv).to(o_ptr.dtype.element_ty), mask=m_mask[:, None] & (d1 < D))


def split_head(d: int) -> tuple[int, int]:
    """The head's two products: the largest power of two <= d, and the rest padded to a power of two of
    at least 16 (0: no second product). 72 -> (64, 16); 64 -> (64, 0); 80 -> (64, 16); 96 -> (64, 32)."""
    d0 = 1 << (d.bit_length() - 1)
    rest = d - d0
    return d0, (0 if rest == 0 else max(16, 1 << (rest - 1).bit_length()))


def supported(head_dim: int) -> bool:
    """Head sizes the kernel takes: multiples of 8 from 16 to 256 (loads of whole 16-byte vectors)."""
    return 16 <= head_dim <= 256 and head_dim % 8 == 0


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
              scale: float, kernel: Any = None, config: tuple[int, int, int, int] | None = None,
              split: tuple[int, int] | None = None) -> torch.Tensor:
    """Non-causal attention within each sequence of `cu_seqlens` (int32 on q's device, [S + 1]).

    q, k, v: [positions, heads, head_dim], each position's heads side by side (copied where they are
    not); returns the same shape, contiguous. `kernel` stands in for the Triton kernel (`prewarm`
    records the launch); `config` (block rows, block columns, warps, stages) and `split` (the head's
    two products, `split_head`'s) for the defaults, in the probe's sweep.
    """
    block_m, block_n, warps, stages = config or (BLOCK_M, BLOCK_N, WARPS, STAGES)
    kernel = _vision_attn_kernel if kernel is None else kernel
    n, heads, d = q.shape
    q, k, v = (t if t.stride(2) == 1 and t.stride(1) == d else t.contiguous() for t in (q, k, v))
    out = torch.empty(n, heads, d, dtype=q.dtype, device=q.device)
    d0, d1 = split or split_head(d)
    seqs = cu_seqlens.numel() - 1
    grid = (max(1, -(-max_seqlen // block_m)), heads, seqs)
    kernel[grid](q, k, v, out, cu_seqlens, q.stride(0), k.stride(0), v.stride(0), out.stride(0),
                 scale * _LOG2E, D=d, D0=d0, D1=max(d1, 16),
                 TAIL=d1 > 0, BLOCK_M=block_m, BLOCK_N=block_n, LOOP_WHILE=_INTERPRET, num_warps=warps,
                 num_stages=stages)
    return out


def wanted(x: torch.Tensor) -> bool:
    """Whether the vision tower's attention over tensors like `x` (its pixels) would take the kernel."""
    return HAVE_TRITON and ((x.is_cuda and x.dtype in _HALF) or _INTERPRET)


def _applies(module: Any, hidden: torch.Tensor, cu_seqlens: Any, max_seqlen: Any) -> bool:
    from transformers.utils.generic import is_flash_attention_requested

    return (HAVE_TRITON and isinstance(cu_seqlens, torch.Tensor) and isinstance(max_seqlen, int)
            and ((hidden.is_cuda and hidden.dtype in _HALF and cu_seqlens.device == hidden.device) or _INTERPRET)
            and supported(module.head_dim) and not getattr(module, "training", False)
            and not is_flash_attention_requested(module.config))


def _forward(self: Any, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
             position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, max_seqlen: int | None = None,
             **kwargs: Any) -> torch.Tensor:
    """`Kimi_K25VisionAttention.forward` with the attention as `attention` (the projections and the rope
    are the module's and transformers' own)."""
    if not _applies(self, hidden_states, cu_seqlens, max_seqlen) or position_embeddings is None:
        return original()(self, hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                          max_seqlen=max_seqlen, **kwargs)
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    n = hidden_states.shape[0]
    q = self.q_proj(hidden_states).reshape(1, n, -1, self.head_dim)
    k = self.k_proj(hidden_states).reshape(1, n, -1, self.head_dim)
    v = self.v_proj(hidden_states).reshape(1, n, -1, self.head_dim)
    cos, sin = position_embeddings
    # the module attribute, so that `vision_rope.patched` (the rope as one kernel) applies here too
    q, k = kimi_k25.apply_rotary_pos_emb_vision(q, k, cos, sin)
    out = attention(q[0], k[0], v[0], cu_seqlens, max_seqlen, float(self.scaling))
    return self.proj(out.view(n, -1))


def _targets() -> list[tuple[Any, str, Any]]:
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    return [(kimi_k25.Kimi_K25VisionAttention, "forward", _forward)]


_SWAP = Swap(_targets)


def original() -> Any:
    """transformers' own `Kimi_K25VisionAttention.forward`."""
    import transformers.models.kimi_k25.modeling_kimi_k25 as kimi_k25

    return _SWAP.original(kimi_k25.Kimi_K25VisionAttention, "forward")


@contextmanager
def patched() -> Iterator[bool]:
    """Inside the block, the kimi_k25 vision attention runs `attention` where it applies (re-entrant;
    restored after). Yields False (and patches nothing) without Triton."""
    if not HAVE_TRITON:
        yield False
        return
    with _SWAP.active():
        yield True


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: Any, scale: float) -> torch.Tensor:
    """The same attention in float32 with torch's own ops, one sequence at a time (tests and probes)."""
    bounds = [int(b) for b in cu_seqlens.tolist()]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        qs, ks, vs = (t[a:b].float().transpose(0, 1) for t in (q, k, v))
        w = torch.softmax(qs @ ks.transpose(-1, -2) * scale, dim=-1)
        outs.append((w @ vs).transpose(0, 1))
    return torch.cat(outs).to(q.dtype) if outs else q.new_empty(q.shape)


