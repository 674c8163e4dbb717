"""Closing an MoE layer in the decode step: the residual add of the experts' output and the next norm
(`reduce_norm_kernel` in `triton_kernels`, or the experts' down kernels' last programs, `_close_layer`).

Triton helpers only, imported by `triton_kernels` and `quant_kernels` inside their `HAVE_TRITON`
blocks: this module needs Triton (nothing else imports it).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _reduce_norm(x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, SLOTS: tl.constexpr,
                 BLOCK: tl.constexpr, CACHE: tl.constexpr):
    """x' = x + sum(part) (slots summed in order, rounded as transformers' modules round); h = w *
    rmsnorm(x'). CACHE: the loads' cache modifier (".cg" reads through L2 only: parts other
    programs of the same kernel wrote)."""
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    moe = tl.zeros([BLOCK], tl.float32)
    for s in tl.static_range(SLOTS):
        moe += tl.load(part_ptr + s * n + offs, mask=mask, other=0.0, cache_modifier=CACHE)
    dt = x_out_ptr.dtype.element_ty
    xin = tl.load(x_ptr + offs, mask=mask, other=0.0, cache_modifier=CACHE).to(tl.float32)
    x = (xin + moe.to(dt).to(tl.float32)).to(dt)
    tl.store(x_out_ptr + offs, x, mask=mask)
    xf = x.to(tl.float32)
    y = xf * tl.rsqrt(tl.sum(xf * xf, 0) / n + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(h_out_ptr + offs, (w * y.to(dt).to(tl.float32)).to(dt), mask=mask)

@triton.jit
def _close_layer(count_ptr, ssq_ptr, x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, rows,
                 SLOTS: tl.constexpr, BLOCK: tl.constexpr, CLOSE: tl.constexpr, NB: tl.constexpr):
    """`reduce_norm_kernel`'s work done inside the experts' down kernel (grid (row blocks, slots)),
    one kernel launch a layer fewer, by whichever programs store their part last.

    Each program counts itself in once its part is stored (the barrier orders its threads' stores
    before the count, the count's release makes them visible to the GPU, its acquire makes the
    others' visible to the last one; later reads go through L2, `.cg`). CLOSE 1: one count over all
    programs; the last sums every part in slot order, exactly as `reduce_norm_kernel` does. CLOSE 2:
    a count per row block (at count_ptr + 1 + block); the last of a block's slots sums that block's
    rows in slot order, stores them and their sum of squares (ssq_ptr + block), then counts the block
    in at count_ptr; the last block normalises the whole row from the blocks' sums (NB: a power of
    two >= the row blocks). The serial tail is then two small steps instead of one program reading
    every part. Each count is set back to 0 by the program that finished it."""
    tl.debug_barrier()
    if CLOSE == 1:
        done = tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(0) * tl.num_programs(1) - 1:
            _reduce_norm(x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, SLOTS, BLOCK, ".cg")
            tl.atomic_xchg(count_ptr, 0, sem="relaxed", scope="gpu")
    else:
        nb = tl.program_id(0)
        done = tl.atomic_add(count_ptr + 1 + nb, 1, sem="acq_rel", scope="gpu")
        if done == tl.num_programs(1) - 1:
            moe = tl.zeros(rows.shape, tl.float32)
            for s in tl.static_range(SLOTS):
                moe += tl.load(part_ptr + s * n + rows, cache_modifier=".cg")
            dt = x_out_ptr.dtype.element_ty
            x = (tl.load(x_ptr + rows).to(tl.float32) + moe.to(dt).to(tl.float32)).to(dt)
            tl.store(x_out_ptr + rows, x)
            xf = x.to(tl.float32)
            tl.store(ssq_ptr + nb, tl.sum(xf * xf, 0))
            tl.atomic_xchg(count_ptr + 1 + nb, 0, sem="relaxed", scope="gpu")
            tl.debug_barrier()
            blocks = tl.num_programs(0)
            if tl.atomic_add(count_ptr, 1, sem="acq_rel", scope="gpu") == blocks - 1:
                bb = tl.arange(0, NB)
                ssq = tl.sum(tl.load(ssq_ptr + bb, mask=bb < blocks, other=0.0, cache_modifier=".cg"), 0)
                offs = tl.arange(0, BLOCK)
                mask = offs < n
                y = tl.load(x_out_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
                y = y * tl.rsqrt(ssq / n + eps)
                w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                tl.store(h_out_ptr + offs, (w * y.to(dt).to(tl.float32)).to(dt), mask=mask)
                tl.atomic_xchg(count_ptr, 0, sem="relaxed", scope="gpu")
