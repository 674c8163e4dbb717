"""Triton kernels for batch-1 decode: norms, latent prep, absorbed MLA attention, router and experts.

Importing this module never fails: without Triton, `HAVE_TRITON` is False and the kernels are absent.
Matrix-vector products multiply elementwise in float32, the weights loaded straight into registers
(`KernelConfig.gemv_fma`, `expert_fma`: faster on an H200 since 2026-12-04), or as `tl.dot` against the
vector padded to 16 columns, where Triton stages the weight loads through shared memory (the A/B setting
the kernels had before).
"""

from __future__ import annotations

try:  # Triton ships with CUDA builds of torch; CPU machines usually lack it
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    triton = None
    tl = None
    HAVE_TRITON = False

if HAVE_TRITON:
    from kimi_cli.engine.fast.close_kernels import _close_layer, _reduce_norm  # the MoE layer's close

    @triton.jit
    def _gdc(PDL: tl.constexpr):
        """Programmatic dependent launch (Hopper and newer; `launch_pdl=True`): wait until the previous
        kernel has finished and its writes are visible, then let the next kernel's programs be placed.

        Every kernel of the decode step calls this before it touches memory, so the next kernel's
        launch, placement and set-up overlap this one's work (PDL 1; PDL 2 waits here but lets the next
        kernel launch at the end, `_gdc_end`); a kernel that reads a result two launches back is safe
        because its predecessor, too, waited before finishing.
        """
        if PDL:
            tl.extra.cuda.gdc_wait()
        if PDL == 1:
            tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _gdc_end(PDL: tl.constexpr):
        """Dependent launch's trigger at a program's end (PDL 2, `KernelConfig.pdl_late`): the next
        kernel's programs are placed only as this kernel's last ones finish, so they take no SM slot
        from this kernel's later waves; with PDL 1 `_gdc` triggered at the start, with 0 nothing does."""
        if PDL == 2:
            tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _prefetch_rows(base, rows, row_bytes, LINES: tl.constexpr):
        """Ask L2 for the first LINES 128-byte lines of each of `rows` (row r at byte r * row_bytes of
        `base`). Called before `_gdc`: a kernel's weights do not depend on the kernel before it, so they
        stream in while that kernel finishes (a cache hint: L2 is where the GPU's writes meet)."""
        line = tl.minimum(tl.arange(0, LINES) * 128, row_bytes - 1)
        ptrs = base.to(tl.pointer_type(tl.uint8)) + rows[:, None].to(tl.int64) * row_bytes + line[None, :]
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)

    @triton.jit
    def rmsnorm_kernel(
        x_ptr, d_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, HAS_D: tl.constexpr, BLOCK: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        """h = w * rmsnorm(x [+ d]); with `d`, also stores the sum (rounded like a bf16 add)."""
        _gdc(PDL)
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        if HAS_D:
            x = (x.to(tl.float32) + tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)).to(
                x_out_ptr.dtype.element_ty
            )
            tl.store(x_out_ptr + offs, x, mask=mask)
        xf = x.to(tl.float32)
        y = xf * tl.rsqrt(tl.sum(xf * xf, 0) / n + eps)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        h = (w * y.to(h_out_ptr.dtype.element_ty).to(tl.float32)).to(h_out_ptr.dtype.element_ty)
        tl.store(h_out_ptr + offs, h, mask=mask)
        _gdc_end(PDL)

    @triton.jit
    def add_norm_router_kernel(
        x_ptr, d_ptr, w_ptr, r_ptr, x_out_ptr, h_out_ptr, logit_ptr, n, eps, BLOCK: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        """x' = x + d; h = w * rmsnorm(x'); program e also computes router logit e = h . router[e] in fp32.

        Every program recomputes the (tiny) norm so that the router needs no second launch.
        """
        _gdc(PDL)
        e = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + tl.load(d_ptr + offs, mask=mask, other=0.0).to(tl.float32)).to(
            x_out_ptr.dtype.element_ty
        )
        xf = x.to(tl.float32)
        y = xf * tl.rsqrt(tl.sum(xf * xf, 0) / n + eps)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        h = (w * y.to(h_out_ptr.dtype.element_ty).to(tl.float32)).to(h_out_ptr.dtype.element_ty)
        r = tl.load(r_ptr + e * n + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(logit_ptr + e, tl.sum(h.to(tl.float32) * r, 0))
        if e == 0:
            tl.store(x_out_ptr + offs, x, mask=mask)
            tl.store(h_out_ptr + offs, h, mask=mask)
        _gdc_end(PDL)

    @triton.jit
    def latent_prep_kernel(
        ckv_ptr, q_ptr, nw_ptr, rope_ptr, pos_ptr, c_ptr, k_ptr, qpe_ptr, wuk_ptr, qlat_ptr, eps, max_len,
        wuk_head_stride,
        KV: tl.constexpr, HALF: tl.constexpr, H: tl.constexpr, QDIM: tl.constexpr, NOPE: tl.constexpr,
        BLOCK_C: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        """Queries into latent space and the new cache row, one launch for the whole layer.

        Program (h, cb) computes q_lat[h, cb] = q_nope[h] @ W_uk[h][:, cb]; programs (h, 0) also rope
        q_pe[h]; the extra program (H, 0) normalises the new latent, ropes k_pe and stores both at `pos`.
        """
        _gdc(PDL)
        h = tl.program_id(0)
        cb = tl.program_id(1)
        pos = tl.load(pos_ptr)
        dt = c_ptr.dtype.element_ty
        j = tl.arange(0, HALF)
        cos = tl.load(rope_ptr + pos * HALF + j).to(tl.float32)
        sin = tl.load(rope_ptr + max_len * HALF + pos * HALF + j).to(tl.float32)
        if h < H:
            dn = tl.arange(0, NOPE)
            cc = cb * BLOCK_C + tl.arange(0, BLOCK_C)
            qn = tl.load(q_ptr + h * QDIM + dn).to(tl.float32)
            w = tl.load(wuk_ptr + h * wuk_head_stride + dn[:, None] * KV + cc[None, :]).to(tl.float32)
            tl.store(qlat_ptr + h * KV + cc, tl.sum(qn[:, None] * w, 0).to(dt))
            if cb == 0:
                qe = tl.load(q_ptr + h * QDIM + NOPE + 2 * j).to(tl.float32)
                qo = tl.load(q_ptr + h * QDIM + NOPE + 2 * j + 1).to(tl.float32)
                tl.store(qpe_ptr + h * 2 * HALF + j, (qe * cos - qo * sin).to(dt))
                tl.store(qpe_ptr + h * 2 * HALF + HALF + j, (qo * cos + qe * sin).to(dt))
        elif cb == 0:
            offs = tl.arange(0, KV)
            c = tl.load(ckv_ptr + offs).to(tl.float32)
            c = c * tl.rsqrt(tl.sum(c * c, 0) / KV + eps)
            nw = tl.load(nw_ptr + offs).to(tl.float32)
            tl.store(c_ptr + pos * KV + offs, (nw * c.to(dt).to(tl.float32)).to(dt))
            ke = tl.load(ckv_ptr + KV + 2 * j).to(tl.float32)
            ko = tl.load(ckv_ptr + KV + 2 * j + 1).to(tl.float32)
            tl.store(k_ptr + pos * 2 * HALF + j, (ke * cos - ko * sin).to(dt))
            tl.store(k_ptr + pos * 2 * HALF + HALF + j, (ko * cos + ke * sin).to(dt))
        _gdc_end(PDL)

    @triton.jit
    def mla_split_kernel(
        qlat_ptr, qpe_ptr, c_ptr, k_ptr, pos_ptr, acc_ptr, lse_ptr, scaling,
        H: tl.constexpr, KV: tl.constexpr, R: tl.constexpr, BLOCK_N: tl.constexpr, ITERS: tl.constexpr,
        PDL: tl.constexpr = False,
    ):  # fmt: skip
        """One split of flash-decoding over the latent cache: all heads share each loaded latent row.

        A split covers ITERS * BLOCK_N positions; splits past the live length only mark themselves empty.
        """
        _gdc(PDL)
        s = tl.program_id(0)
        live = tl.load(pos_ptr) + 1
        start = s * (ITERS * BLOCK_N)
        end = tl.minimum(start + ITERS * BLOCK_N, live)
        hh = tl.arange(0, H)
        if start < end:
            dk = tl.arange(0, KV)
            dr = tl.arange(0, R)
            q = tl.load(qlat_ptr + hh[:, None] * KV + dk[None, :])
            qp = tl.load(qpe_ptr + hh[:, None] * R + dr[None, :])
            m = tl.full([H], float("-inf"), tl.float32)
            lsum = tl.zeros([H], tl.float32)
            acc = tl.zeros([H, KV], tl.float32)
            for it in range(ITERS):
                rows = start + it * BLOCK_N + tl.arange(0, BLOCK_N)
                ok = rows < end
                c = tl.load(c_ptr + rows[:, None] * KV + dk[None, :], mask=ok[:, None], other=0.0)
                kp = tl.load(k_ptr + rows[:, None] * R + dr[None, :], mask=ok[:, None], other=0.0)
                sc = tl.dot(q, tl.trans(c)) + tl.dot(qp, tl.trans(kp))
                sc = tl.where(ok[None, :], sc * scaling, float("-inf"))
                m_new = tl.maximum(m, tl.max(sc, 1))
                p = tl.exp(sc - m_new[:, None])
                alpha = tl.exp(m - m_new)
                lsum = lsum * alpha + tl.sum(p, 1)
                acc = acc * alpha[:, None] + tl.dot(p.to(c.dtype), c)
                m = m_new
            tl.store(acc_ptr + s * H * KV + hh[:, None] * KV + dk[None, :], acc / lsum[:, None])
            tl.store(lse_ptr + s * H + hh, m + tl.log(lsum))
        else:
            tl.store(lse_ptr + s * H + hh, tl.full([H], float("-inf"), tl.float32))
        _gdc_end(PDL)

    @triton.jit
    def mla_combine_kernel(
        acc_ptr, lse_ptr, out_ptr, n_split, H: tl.constexpr, KV: tl.constexpr, S: tl.constexpr,
        BLOCK_D: tl.constexpr, PDL: tl.constexpr = False,
    ):  # fmt: skip
        """Merge head h's splits for BLOCK_D latent dims by their log-sum-exp weights (one load phase)."""
        _gdc(PDL)
        h = tl.program_id(0)
        dk = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        ss = tl.arange(0, S)
        lse = tl.load(lse_ptr + ss * H + h, mask=ss < n_split, other=float("-inf"))
        live = lse > float("-inf")
        w = tl.where(live, tl.exp(lse - tl.max(lse, 0)), 0.0)
        part = tl.load(acc_ptr + ss[:, None] * H * KV + h * KV + dk[None, :], mask=live[:, None], other=0.0)
        out = tl.sum(part * w[:, None], 0) / tl.sum(w, 0)
        tl.store(out_ptr + h * KV + dk, out.to(out_ptr.dtype.element_ty))
        _gdc_end(PDL)

    @triton.jit
    def head_proj_kernel(
        x_ptr, w_ptr, out_ptr, head_stride, KV: tl.constexpr, V: tl.constexpr, BLOCK_V: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        """out[h, vb] = W[h][vb] @ x[h] for per-head matrices W[h] of [V, KV] rows (here W_uv)."""
        _gdc(PDL)
        h = tl.program_id(0)
        vv = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        dk = tl.arange(0, KV)
        x = tl.load(x_ptr + h * KV + dk).to(tl.float32)
        w = tl.load(w_ptr + h * head_stride + vv[:, None] * KV + dk[None, :]).to(tl.float32)
        tl.store(out_ptr + h * V + vv, tl.sum(w * x[None, :], 1).to(out_ptr.dtype.element_ty))
        _gdc_end(PDL)

    @triton.jit
    def _topk(logit_ptr, bias_ptr, E: tl.constexpr, K: tl.constexpr, KP: tl.constexpr):
        """Sigmoid scores, top-k by score + bias; returns (ids [KP], un-biased scores [KP])."""
        ee = tl.arange(0, E)
        scores = tl.sigmoid(tl.load(logit_ptr + ee))
        choice = scores + tl.load(bias_ptr + ee)
        kk = tl.arange(0, KP)
        ids = tl.zeros([KP], tl.int32)
        picked = tl.zeros([KP], tl.float32)
        for i in tl.static_range(K):
            j = tl.argmax(choice, 0)
            hit = ee == j
            ids = tl.where(kk == i, j, ids)
            picked = tl.where(kk == i, tl.sum(tl.where(hit, scores, 0.0), 0), picked)
            choice = tl.where(hit, float("-inf"), choice)
        return ids, picked

    @triton.jit
    def _route(logit_ptr, bias_ptr, ids_ptr, wts_ptr, scale, store, E: tl.constexpr, K: tl.constexpr,
               KP: tl.constexpr, NORM: tl.constexpr):
        """The router's top-k ids [KP]; where `store` holds (one program), also writes the ids and
        the weights (renormalised with NORM, times `scale`) for the down kernel."""
        ids, picked = _topk(logit_ptr, bias_ptr, E, K, KP)
        if store:
            kk = tl.arange(0, KP)
            wts = picked
            if NORM:
                wts = wts / (tl.sum(tl.where(kk < K, wts, 0.0), 0) + 1e-20)
            tl.store(ids_ptr + kk, ids, mask=kk < K)
            tl.store(wts_ptr + kk, wts * scale, mask=kk < K)
        return ids

    @triton.jit
    def _rows_dot(base, vec_ptr, rows, stride, length, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  FMA: tl.constexpr = False):
        """float32 [BLOCK_N]: rows `rows` of the matrix at `base` (row stride `stride`) times vec[:length].
        FMA: elementwise float32 multiply-adds in a [BLOCK_N, BLOCK_K] tile (the weights straight from
        global memory to registers) instead of `tl.dot` against the padded vector."""
        cols = tl.arange(0, 16)
        acc = tl.zeros([BLOCK_N, BLOCK_K if FMA else 16], tl.float32)
        for k0 in range(0, length, BLOCK_K):
            kv = k0 + tl.arange(0, BLOCK_K)
            ok = kv < length
            v = tl.load(vec_ptr + kv, mask=ok, other=0.0)
            w = tl.load(base + rows[:, None] * stride + kv[None, :], mask=ok[None, :], other=0.0)
            if FMA:
                acc += w.to(tl.float32) * v.to(tl.float32)[None, :]
            else:
                vm = tl.where(cols[None, :] == 0, v[:, None], 0.0).to(v.dtype)
                acc = tl.dot(w, vm, acc)
        return tl.sum(acc, 1)

    @triton.jit
    def gemv2_kernel(
        x_ptr, a_ptr, b_ptr, out_a_ptr, out_b_ptr, n_a,
        K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr = False,
        PREFETCH: tl.constexpr = 0, FMA: tl.constexpr = False,
    ):  # fmt: skip
        """out_a = A @ x and out_b = B @ x in one launch (programs past A's rows take B's); rows % BLOCK_N == 0.
        PREFETCH: lines of each row asked of L2 before waiting for the previous kernel (0: none)."""
        pid = tl.program_id(0)
        blocks_a = n_a // BLOCK_N
        if PREFETCH:
            nb = tl.where(pid < blocks_a, pid, pid - blocks_a) * BLOCK_N + tl.arange(0, BLOCK_N)
            row_bytes = K * (a_ptr.dtype.element_ty.primitive_bitwidth // 8)
            if pid < blocks_a:
                _prefetch_rows(a_ptr, nb, row_bytes, PREFETCH)
            else:
                _prefetch_rows(b_ptr, nb, row_bytes, PREFETCH)
        _gdc(PDL)
        if pid < blocks_a:
            rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            val = _rows_dot(a_ptr, x_ptr, rows, K, K, BLOCK_N, BLOCK_K, FMA)
            tl.store(out_a_ptr + rows, val.to(out_a_ptr.dtype.element_ty))
        else:
            rows = (pid - blocks_a) * BLOCK_N + tl.arange(0, BLOCK_N)
            val = _rows_dot(b_ptr, x_ptr, rows, K, K, BLOCK_N, BLOCK_K, FMA)
            tl.store(out_b_ptr + rows, val.to(out_b_ptr.dtype.element_ty))
        _gdc_end(PDL)

    @triton.jit
    def _up_program(logit_ptr, bias_ptr, ids_ptr, wts_ptr, scale, E: tl.constexpr, K: tl.constexpr,
                    KP: tl.constexpr, NORM: tl.constexpr, BLOCK_N: tl.constexpr):
        """(slot, rows, expert id) of an experts-up program (slot, row block): each program routes for
        itself (64 scores: free) and program (0, 0) also stores the ids and weights for the down kernel.
        The expert id is meaningful for the routed slots (< K) only."""
        slot = tl.program_id(0)
        nb = tl.program_id(1)
        ids = _route(logit_ptr, bias_ptr, ids_ptr, wts_ptr, scale, (slot == 0) & (nb == 0), E, K, KP, NORM)
        e = tl.sum(tl.where(tl.arange(0, KP) == slot, ids, 0), 0).to(tl.int64)
        return slot, nb * BLOCK_N + tl.arange(0, BLOCK_N), e

    @triton.jit
    def _store_swiglu(out_ptrs, g, u):
        """Store silu(gate) * up at `out_ptrs`, rounding as transformers' bf16 modules do between steps
        (gate and up products, then silu, in the output dtype)."""
        dt = out_ptrs.dtype.element_ty
        g = g.to(dt).to(tl.float32)
        u = u.to(dt).to(tl.float32)
        a = (g * tl.sigmoid(g)).to(dt).to(tl.float32) * u
        tl.store(out_ptrs, a.to(dt))

    @triton.jit
    def experts_up_kernel(
        x_ptr, logit_ptr, bias_ptr, gu_ptr, sg_ptr, su_ptr, act_ptr, ids_ptr, wts_ptr, scale,
        HID: tl.constexpr, INTER: tl.constexpr, E: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
        NORM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr = False,
        FMA: tl.constexpr = False,
    ):  # fmt: skip
        """act[slot] = silu(gate) * up for the chosen experts (slots < K) and the shared experts' halves.

        Each program routes for itself (64 scores: free) and reads its expert's rows in place.
        """
        _gdc(PDL)
        slot, rows, e = _up_program(logit_ptr, bias_ptr, ids_ptr, wts_ptr, scale, E, K, KP, NORM, BLOCK_N)
        if slot < K:
            g_base = gu_ptr + e * (2 * INTER * HID)
            g = _rows_dot(g_base, x_ptr, rows, HID, HID, BLOCK_N, BLOCK_K, FMA)
            u = _rows_dot(g_base + INTER * HID, x_ptr, rows, HID, HID, BLOCK_N, BLOCK_K, FMA)
        else:
            half = (slot - K).to(tl.int64) * (INTER * HID)
            g = _rows_dot(sg_ptr + half, x_ptr, rows, HID, HID, BLOCK_N, BLOCK_K, FMA)
            u = _rows_dot(su_ptr + half, x_ptr, rows, HID, HID, BLOCK_N, BLOCK_K, FMA)
        _store_swiglu(act_ptr + slot * INTER + rows, g, u)
        _gdc_end(PDL)

    @triton.jit
    def experts_down_kernel(
        act_ptr, ids_ptr, wts_ptr, dn_ptr, sd_ptr, part_ptr, count_ptr, ssq_ptr, x_ptr, w_ptr, x_out_ptr,
        h_out_ptr, eps, HID: tl.constexpr, INTER: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr, CLOSE: tl.constexpr = 0, SLOTS: tl.constexpr = 1, BLOCK: tl.constexpr = 1,
        NB: tl.constexpr = 1, PDL: tl.constexpr = False, FMA: tl.constexpr = False,
    ):  # fmt: skip
        """part[slot, rows] = weight(slot) * down(slot)[rows] @ act[slot], in float32. With CLOSE (1 or 2)
        the last programs also close the layer (`_close_layer`: x_out = x + sum(part), h_out = w *
        rmsnorm(x_out)); with 0, `reduce_norm_kernel` does (count_ptr .. eps are then unused)."""
        _gdc(PDL)
        nb = tl.program_id(0)
        slot = tl.program_id(1)
        rows = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        if slot < K:
            e = tl.load(ids_ptr + slot).to(tl.int64)
            val = _rows_dot(
                dn_ptr + e * (HID * INTER), act_ptr + slot * INTER, rows, INTER, INTER, BLOCK_N, BLOCK_K, FMA
            )
            val = val * tl.load(wts_ptr + slot)
        else:
            half = (slot - K).to(tl.int64) * INTER
            val = _rows_dot(sd_ptr + half, act_ptr + slot * INTER, rows, 2 * INTER, INTER, BLOCK_N, BLOCK_K,
                           FMA)
        tl.store(part_ptr + slot * HID + rows, val)
        if CLOSE:
            _close_layer(count_ptr, ssq_ptr, x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, HID, eps, rows, SLOTS,
                         BLOCK, CLOSE, NB)
        _gdc_end(PDL)

    @triton.jit
    def reduce_norm_kernel(
        x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, SLOTS: tl.constexpr, BLOCK: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        """x' = x + sum(part); h = w * rmsnorm(x'): closes an MoE layer and opens the next one."""
        _gdc(PDL)
        _reduce_norm(x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, n, eps, SLOTS, BLOCK, "")
        _gdc_end(PDL)
