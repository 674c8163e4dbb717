"""Triton kernels for batch-1 decode over quantized weights, dequantized in registers.

Formats (kimi_cli/model/formats): FMT 0 int8 with a scale per row; FMT 1 fp8 e4m3 with 128x128 block
scales (DeepSeek-V3's `weight_scale_inv`); FMT 2 int4, two columns a byte (low nibble even), a scale
per row and 128 columns. The kernels walk K in chunks of `BLOCK_K` (128 for fp8 and int4: their scale
group; int8's scale is per row, so any chunk), accumulate, and reduce once at the end. Weights are read
in place: a routed expert is the expert's slice of the stacked parts, found from the chosen id on the
device, so the kernels are CUDA-graph capturable. Importing this module never fails without Triton.
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    triton = None
    tl = None
    HAVE_TRITON = False

FMT_CODES = {"int8": 0, "fp8": 1, "int4": 2}
_INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1") if HAVE_TRITON else None
#: fp8's and int4's scale group along K (and fp8's along N): their kernels walk K in chunks of it.
GROUP = 128

if HAVE_TRITON:
    from kimi_cli.engine.fast.close_kernels import _close_layer
    from kimi_cli.engine.fast.triton_kernels import (  # shared
        _gdc,
        _gdc_end,
        _prefetch_rows,
        _store_swiglu,
        _up_program,
    )

    @triton.jit
    def _qrows_dot(w_base, s_base, vec_ptr, rows, length, stride, s_stride, FMT: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr):  # fmt: skip
        """float32 [BLOCK_N]: rows `rows` (global row ids) of a quantized matrix times vec[:length]:
        the first `length` columns of rows `stride` columns apart (a multiple of 128 columns in for fp8
        and int4, and of 4 / 8 for the word modes, is where a part of a wider matrix may start).

        The stored values are widened in registers (exactly: int8, int4 and e4m3 values are bf16
        numbers). MODES 0 and 1 load them value by value (`_qrows_tiles`); MODES 2 and 3 read 32-bit
        words (`_qrows_words` for int8 and int4, `_qrows_fp8_words` for fp8's mode 2). Either way the
        only reduction is the final one.
        """
        if MODE >= 2 and FMT == 1:
            out = _qrows_fp8_words(w_base, s_base, vec_ptr, rows, length, stride, s_stride, BLOCK_N, BLOCK_K)
        elif MODE >= 2:
            out = _qrows_words(w_base, s_base, vec_ptr, rows, length, stride, s_stride, FMT, BLOCK_N, BLOCK_K,
                               MODE)
        else:
            out = _qrows_tiles(w_base, s_base, vec_ptr, rows, length, stride, s_stride, FMT, BLOCK_N, BLOCK_K,
                               MODE)
        return out

    @triton.jit
    def _qrows_tiles(w_base, s_base, vec_ptr, rows, length, stride, s_stride, FMT: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr):  # fmt: skip
        """MODES 0 and 1 of `_qrows_dot`. MODE 0 multiplies each chunk as `tl.dot` against the vector
        padded to 16 columns and accumulates the [BLOCK_N, 16] products; MODE 1 accumulates elementwise
        float32 products in a [BLOCK_N, BLOCK_K] tile (int4: [BLOCK_N, 64]).
        A chunk is BLOCK_K columns: any width for int8, whose per-row scale is applied once at the end;
        a multiple of 128 for int4, whose scale groups are unrolled inside the chunk (each group's
        partial products times its per-row scales); for fp8, 128 in mode 0 (the chunk's products times
        its block scale), any multiple of 128 in mode 1, where the program's rows lie in one 128-row
        scale block (BLOCK_N divides 128) and each column's block scale is folded into the vector.
        """
        cols = tl.arange(0, 16)
        if MODE == 0:
            acc = tl.zeros([BLOCK_N, 16], tl.float32)
        elif FMT == 2:
            acc = tl.zeros([BLOCK_N, 64], tl.float32)
        else:
            acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        if FMT == 1 and MODE == 1:  # the rows share one 128-row scale block: its scales join the vector
            group = tl.min(rows, 0) // 128
        for k0 in range(0, length, BLOCK_K):
            if FMT == 2:  # BLOCK_K // 128 scale groups a chunk (mode 0: one), unrolled
                for u in tl.static_range(BLOCK_K // 128):
                    kc = k0 + u * 128
                    kb = kc // 2 + tl.arange(0, 64)
                    ok = kb < length // 2
                    p = tl.load(w_base + rows[:, None] * (stride // 2) + kb[None, :], mask=ok[None, :], other=136)
                    ve = tl.load(vec_ptr + 2 * kb, mask=ok, other=0.0)
                    vo = tl.load(vec_ptr + 2 * kb + 1, mask=ok, other=0.0)
                    s = tl.load(s_base + rows * s_stride + kc // 128, mask=(rows >= 0) & (kc < length), other=0.0)
                    lo = (p & 15).to(tl.int32) - 8
                    hi = (p >> 4).to(tl.int32) - 8
                    if MODE == 0:
                        vme = tl.where(cols[None, :] == 0, ve[:, None], 0.0).to(ve.dtype)
                        vmo = tl.where(cols[None, :] == 0, vo[:, None], 0.0).to(ve.dtype)
                        part = tl.dot(hi.to(ve.dtype), vmo, tl.dot(lo.to(ve.dtype), vme))
                    else:
                        part = (lo.to(tl.float32) * ve.to(tl.float32)[None, :]
                                + hi.to(tl.float32) * vo.to(tl.float32)[None, :])
                    acc += part * s[:, None]
            else:
                kv = k0 + tl.arange(0, BLOCK_K)
                ok = kv < length
                v = tl.load(vec_ptr + kv, mask=ok, other=0.0)
                w = tl.load(w_base + rows[:, None] * stride + kv[None, :], mask=ok[None, :], other=0.0)
                if FMT == 0:  # int8: the row scale comes at the end
                    if MODE == 0:
                        vm = tl.where(cols[None, :] == 0, v[:, None], 0.0).to(v.dtype)
                        acc = tl.dot(w.to(v.dtype), vm, acc)
                    else:
                        acc += w.to(tl.float32) * v.to(tl.float32)[None, :]
                elif MODE == 0:  # fp8: this chunk's block scale (BLOCK_K is 128)
                    s = tl.load(s_base + (rows // 128) * s_stride + k0 // 128)
                    vm = tl.where(cols[None, :] == 0, v[:, None], 0.0).to(v.dtype)
                    acc += tl.dot(w.to(v.dtype), vm) * s[:, None]
                else:  # fp8: the block scale of each column, folded into the float32 vector
                    s = tl.load(s_base + group * s_stride + kv // 128, mask=ok, other=0.0)
                    acc += w.to(tl.float32) * (v.to(tl.float32) * s)[None, :]
        out = tl.sum(acc, 1)
        if FMT == 0:
            out = out * tl.load(s_base + rows)
        return out

    @triton.jit
    def _mask_merge(x, m: tl.constexpr, c: tl.constexpr, XOR: tl.constexpr):
        """(x & m) | c, or (x & m) ^ c with XOR, as one LOP3: ptxas splits the two-constant form in two
        (an instruction takes one immediate) on the integer pipe that the widening is bound by. Plain
        ops in Triton's interpreter, which runs no PTX (the same bits)."""
        if _INTERPRET:
            y = (x & m) ^ c if XOR else (x & m) | c
        else:
            mc = [x, tl.full(x.shape, m, tl.int32), tl.full(x.shape, c, tl.int32)]
            if XOR:
                y = tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0x6A;", "=r,r,r,r", mc, dtype=tl.int32,
                                              is_pure=True, pack=1)
            else:
                y = tl.inline_asm_elementwise("lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r", mc, dtype=tl.int32,
                                              is_pure=True, pack=1)
        return y

    @triton.jit
    def _exact(w, j: tl.constexpr, FMT: tl.constexpr):
        """Mode 2: value j of each word as float32, exactly: its bits in the low mantissa of 2^23."""
        if FMT == 0:  # a signed byte b: (b ^ 0x80) | 2^23's bits = 2^23 + 128 + b
            f = (((w >> (8 * j)) & 0xFF) ^ 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
        else:  # a nibble n holding value + 8: n | 2^23's bits = 2^23 + n
            f = (((w >> (4 * j)) & 0xF) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
        return f

    @triton.jit
    def _biased(w, j: tl.constexpr, FMT: tl.constexpr):
        """Mode 3: 1 + code / 2^bits for value j of each word (the code in mantissa bits 23 - bits .. 22
        under 1.0's exponent): int8's code is the byte with its top bit flipped (b + 128), int4's the
        nibble as stored (value + 8)."""
        BITS: tl.constexpr = 8 - 4 * (FMT // 2)
        sh = 23 - BITS - BITS * j  # constexpr: BITS and j are
        x = w << sh if sh >= 0 else w >> (-sh)
        if FMT == 0:
            bits = _mask_merge(x, 0x7F8000, 0x3FC00000, True)
        else:
            bits = _mask_merge(x, 0x780000, 0x3F800000, False)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _qrows_words(w_base, s_base, vec_ptr, rows, length, stride, s_stride, FMT: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr = 2):  # fmt: skip
        """MODES 2 and 3 of `_qrows_dot` for int8 and int4: the weights are read as 32-bit words (4 int8
        or 8 int4 values) and each value is widened by integer ops alone, no int-to-float conversion
        (quarter rate). Needs `length` a multiple of 4 (int8) or 8 (int4) and BLOCK_K a multiple of 128
        for int4 (its scale group).

        MODE 2 places a value's bits in the low mantissa of 2^23 and subtracts (exactly): shift, mask,
        subtract, multiply-add per value. MODE 3 places them in the high mantissa of 1.0 instead, so the
        float read is 1 + u / 2^bits (u the stored unsigned code, `value + 128` or `value + 8`) and is
        multiplied as it is: with the vector scaled by 2^bits (exact), sum(f * v') = sum(u * v) +
        sum(v'), hence sum(value * v) = sum(f * v') - 1.5 * sum(v') for both widths (128 = 2^8 / 2,
        8 = 2^4 / 2). The correction depends on the vector alone, so it is summed once per chunk for all
        rows: shift, mask, multiply-add per value (int8 adds into the accumulator directly; its scale is
        per row).
        """
        PER: tl.constexpr = 4 + 4 * (FMT // 2)  # values per word: 4 int8 (FMT 0), 8 int4 (FMT 2)
        WK: tl.constexpr = BLOCK_K // PER
        BITS: tl.constexpr = 8 - 4 * (FMT // 2)
        words = length // PER
        wp = w_base.to(tl.pointer_type(tl.int32))
        acc = tl.zeros([BLOCK_N, WK], tl.float32)
        corr = tl.zeros([WK], tl.float32)  # MODE 3: 1.5 * the scaled vector's sums, per word column
        for k0 in range(0, length, BLOCK_K):
            kw = k0 // PER + tl.arange(0, WK)
            ok = kw < words
            w = tl.load(wp + rows[:, None] * (stride // PER) + kw[None, :], mask=ok[None, :], other=0)
            if MODE == 3:
                vs = tl.zeros([WK], tl.float32)
            if FMT == 2 or MODE == 2:
                part = tl.zeros([BLOCK_N, WK], tl.float32)
            for j in tl.static_range(PER):
                v = tl.load(vec_ptr + PER * kw + j, mask=ok, other=0.0).to(tl.float32)
                if MODE == 3:
                    v = v * (1 << BITS)
                    vs += v
                    if FMT == 2:
                        part += _biased(w, j, FMT) * v[None, :]
                    else:
                        acc += _biased(w, j, FMT) * v[None, :]
                else:
                    part += _exact(w, j, FMT) * v[None, :]
            if FMT == 2:  # each word's 8 values share one scale group of 128 (16 words)
                s = tl.load(s_base + rows[:, None] * s_stride + kw[None, :] // 16, mask=ok[None, :], other=0.0)
                if MODE == 3:
                    part = part - 1.5 * vs[None, :]
                acc += part * s
            elif MODE == 3:
                corr += 1.5 * vs
            else:
                acc += part
        out = tl.sum(acc, 1)
        if FMT == 0:
            if MODE == 3:
                out = out - tl.sum(corr, 0)
            out = out * tl.load(s_base + rows)
        return out

    @triton.jit
    def _e4m3_top(x):
        """The e4m3 value in the top byte of each word as float32, exactly (Triton's interpreter): its sign
        and 7 bits placed in float32's (an arithmetic shift by 4 under the mask 0x87F00000), times 2^120,
        the difference of the two formats' exponent biases."""
        return ((x >> 4) & -2014314496).to(tl.float32, bitcast=True) * 1.329227995784916e36

    @triton.jit
    def _e4m3x4(w):
        """The 4 e4m3 values of each 32-bit word as float32 (byte 0 first), exactly: on the GPU two
        `cvt.rn.f16x2.e4m3x2` (compute capability 8.9+) and four f16 widenings; in Triton's interpreter,
        which runs no PTX, each byte moved to the top (`_e4m3_top`)."""
        if _INTERPRET:
            f0, f1, f2, f3 = _e4m3_top(w << 24), _e4m3_top(w << 16), _e4m3_top(w << 8), _e4m3_top(w)
        else:
            f0, f1, f2, f3 = tl.inline_asm_elementwise(
                """{
                .reg .b16 lo, hi;
                .reg .b32 p, q;
                .reg .f16 a, b, c, d;
                mov.b32 {lo, hi}, $4;
                cvt.rn.f16x2.e4m3x2 p, lo;
                cvt.rn.f16x2.e4m3x2 q, hi;
                mov.b32 {a, b}, p;
                mov.b32 {c, d}, q;
                cvt.f32.f16 $0, a;
                cvt.f32.f16 $1, b;
                cvt.f32.f16 $2, c;
                cvt.f32.f16 $3, d;
                }""", "=f,=f,=f,=f,r", [w], dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
                is_pure=True, pack=1)
        return f0, f1, f2, f3

    @triton.jit
    def _qrows_fp8_words(w_base, s_base, vec_ptr, rows, length, stride, s_stride, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr):  # fmt: skip
        """MODE 2 of `_qrows_dot` for fp8: the weights read as 32-bit words of 4 e4m3 values (one address
        a word, not one a value as in mode 1), widened by `_e4m3x4`; a word's 4 columns share one
        128-column scale block, folded into the vector (the program's rows lie in one 128-row block, as
        in mode 1). Needs `length` and `stride` multiples of 4 and BLOCK_K of 128."""
        WK: tl.constexpr = BLOCK_K // 4
        words = length // 4
        wp = w_base.to(tl.pointer_type(tl.int32))
        group = tl.min(rows, 0) // 128
        acc = tl.zeros([BLOCK_N, WK], tl.float32)
        for k0 in range(0, length, BLOCK_K):
            kw = k0 // 4 + tl.arange(0, WK)
            ok = kw < words
            w = tl.load(wp + rows[:, None] * (stride // 4) + kw[None, :], mask=ok[None, :], other=0)
            s = tl.load(s_base + group * s_stride + kw // 32, mask=ok, other=0.0)
            f0, f1, f2, f3 = _e4m3x4(w)
            v0 = tl.load(vec_ptr + 4 * kw, mask=ok, other=0.0).to(tl.float32) * s
            v1 = tl.load(vec_ptr + 4 * kw + 1, mask=ok, other=0.0).to(tl.float32) * s
            v2 = tl.load(vec_ptr + 4 * kw + 2, mask=ok, other=0.0).to(tl.float32) * s
            v3 = tl.load(vec_ptr + 4 * kw + 3, mask=ok, other=0.0).to(tl.float32) * s
            acc += f0 * v0[None, :] + f1 * v1[None, :] + f2 * v2[None, :] + f3 * v3[None, :]
        return tl.sum(acc, 1)

    @triton.jit
    def qgemv2_kernel(
        x_ptr, aw_ptr, as_ptr, bw_ptr, bs_ptr, out_a_ptr, out_b_ptr, n_a, n_b, as_stride, bs_stride,
        K: tl.constexpr, FMT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr,
        PDL: tl.constexpr = False, PREFETCH: tl.constexpr = 0,
    ):  # fmt: skip
        """out_a = A @ x and out_b = B @ x in one launch (programs past A's row blocks take B's).
        PREFETCH: lines of each row asked of L2 before waiting for the previous kernel (0: none)."""
        pid = tl.program_id(0)
        blocks_a = tl.cdiv(n_a, BLOCK_N)
        if PREFETCH:
            row_bytes = K // 2 if FMT == 2 else K
            if pid < blocks_a:
                nb = tl.minimum(pid * BLOCK_N + tl.arange(0, BLOCK_N), n_a - 1)
                _prefetch_rows(aw_ptr, nb, row_bytes, PREFETCH)
            else:
                nb = tl.minimum((pid - blocks_a) * BLOCK_N + tl.arange(0, BLOCK_N), n_b - 1)
                _prefetch_rows(bw_ptr, nb, row_bytes, PREFETCH)
        _gdc(PDL)
        if pid < blocks_a:
            rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            rows_c = tl.minimum(rows, n_a - 1)
            val = _qrows_dot(aw_ptr, as_ptr, x_ptr, rows_c, K, K, as_stride, FMT, BLOCK_N, BLOCK_K, MODE)
            tl.store(out_a_ptr + rows, val.to(out_a_ptr.dtype.element_ty), mask=rows < n_a)
        else:
            rows = (pid - blocks_a) * BLOCK_N + tl.arange(0, BLOCK_N)
            rows_c = tl.minimum(rows, n_b - 1)
            val = _qrows_dot(bw_ptr, bs_ptr, x_ptr, rows_c, K, K, bs_stride, FMT, BLOCK_N, BLOCK_K, MODE)
            tl.store(out_b_ptr + rows, val.to(out_b_ptr.dtype.element_ty), mask=rows < n_b)
        _gdc_end(PDL)

    @triton.jit
    def qexperts_up_kernel(
        x_ptr, logit_ptr, bias_ptr, gw_ptr, gs_ptr, uw_ptr, us_ptr, sgw_ptr, sgs_ptr, suw_ptr, sus_ptr,
        act_ptr, ids_ptr, wts_ptr, scale, w_expert, s_expert, s_stride, ss_stride,
        HID: tl.constexpr, INTER: tl.constexpr, E: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
        NORM: tl.constexpr, FMT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr,
        PDL: tl.constexpr = False,
    ):  # fmt: skip
        """act[slot] = silu(gate) * up for the chosen experts (slots < K) and the shared experts' halves.

        `w_expert` / `s_expert`: elements per expert of the stacked weight / scale parts.
        """
        _gdc(PDL)
        slot, rows, e = _up_program(logit_ptr, bias_ptr, ids_ptr, wts_ptr, scale, E, K, KP, NORM, BLOCK_N)
        if slot < K:
            g = _qrows_dot(gw_ptr + e * w_expert, gs_ptr + e * s_expert, x_ptr, rows, HID, HID, s_stride,
                           FMT, BLOCK_N, BLOCK_K, MODE)
            u = _qrows_dot(uw_ptr + e * w_expert, us_ptr + e * s_expert, x_ptr, rows, HID, HID, s_stride,
                           FMT, BLOCK_N, BLOCK_K, MODE)
        else:
            grows = (slot - K) * INTER + rows
            g = _qrows_dot(sgw_ptr, sgs_ptr, x_ptr, grows, HID, HID, ss_stride, FMT, BLOCK_N, BLOCK_K, MODE)
            u = _qrows_dot(suw_ptr, sus_ptr, x_ptr, grows, HID, HID, ss_stride, FMT, BLOCK_N, BLOCK_K, MODE)
        _store_swiglu(act_ptr + slot * INTER + rows, g, u)
        _gdc_end(PDL)

    @triton.jit
    def qexperts_down_kernel(
        act_ptr, ids_ptr, wts_ptr, dw_ptr, ds_ptr, sdw_ptr, sds_ptr, part_ptr, w_expert, s_expert,
        s_stride, ss_stride, count_ptr, ssq_ptr, x_ptr, w_ptr, x_out_ptr, h_out_ptr, eps, SHARED: tl.constexpr,
        SPLIT: tl.constexpr, HID: tl.constexpr, INTER: tl.constexpr, K: tl.constexpr, FMT: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr, CLOSE: tl.constexpr = 0,
        SLOTS: tl.constexpr = 1, BLOCK: tl.constexpr = 1, NB: tl.constexpr = 1, PDL: tl.constexpr = False,
    ):  # fmt: skip
        """part[slot] = weight(slot) * down(slot) @ act[slot]. The shared experts' down [HID, SHARED * INTER]
        is, with SPLIT, one slot per INTER-column half (slots K .. K + SHARED - 1, every program the same
        length, so none is left running alone at the end); without, slot K reads all its columns.
        CLOSE (1 or 2): the last programs close the layer, as in `triton_kernels.experts_down_kernel`."""
        _gdc(PDL)
        nb = tl.program_id(0)
        slot = tl.program_id(1)
        rows = nb * BLOCK_N + tl.arange(0, BLOCK_N)
        if slot < K:
            e = tl.load(ids_ptr + slot).to(tl.int64)
            val = _qrows_dot(dw_ptr + e * w_expert, ds_ptr + e * s_expert, act_ptr + slot * INTER, rows,
                             INTER, INTER, s_stride, FMT, BLOCK_N, BLOCK_K, MODE)
            val = val * tl.load(wts_ptr + slot)
        elif SPLIT:
            col = (slot - K) * INTER  # the half's first column: a whole number of scale groups (fp8, int4)
            w_off = col // 2 if FMT == 2 else col
            s_off = 0 if FMT == 0 else col // 128  # int8's scale is per row
            val = _qrows_dot(sdw_ptr + w_off, sds_ptr + s_off, act_ptr + slot * INTER, rows, INTER,
                             SHARED * INTER, ss_stride, FMT, BLOCK_N, BLOCK_K, MODE)
        else:
            val = _qrows_dot(sdw_ptr, sds_ptr, act_ptr + K * INTER, rows, SHARED * INTER, SHARED * INTER,
                             ss_stride, FMT, BLOCK_N, BLOCK_K, MODE)
        tl.store(part_ptr + slot * HID + rows, val)
        if CLOSE:
            _close_layer(count_ptr, ssq_ptr, x_ptr, part_ptr, w_ptr, x_out_ptr, h_out_ptr, HID, eps, rows, SLOTS,
                         BLOCK, CLOSE, NB)
        _gdc_end(PDL)
