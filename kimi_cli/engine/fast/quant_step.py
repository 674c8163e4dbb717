"""The fast decode step over quantized weights: `TritonStep` with its products swapped for
`quant_kernels` (int8, fp8, int4 dequantized in registers, weights read in place).

Norms, latent attention and the final lm_head (bf16) are the bf16 step's kernels; the attention
projections, the dense MLP, and the routed + shared experts read the quantized parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kimi_cli.engine.fast.step import TritonStep, triton_block
from kimi_cli.engine.fast.weights import LayerWeights, Matrix, ModelWeights, MoEWeights, QMatrix

BLOCK_N = 32
#: Formats the Triton kernels run by default. fp8 is off: on the H200 (2026-12-01) its kernel differed
#: from the torch reference by 16% of the largest logit on the tiny model (int8 and int4: about 1%,
#: bf16 rounding) although it matched exactly in Triton's interpreter. The fp8 branch has since been
#: rewritten without `tl.dot` (not yet run on a GPU); until a GPU run passes
#: tests/test_fast_quant.py::test_quantized_kernels_on_the_gpu, fp8 decodes through the torch step
#: (dequantizing the chosen experts inside the CUDA graph).
TRITON_FORMATS = ("int8", "int4")


def _ws(m: QMatrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored weight, its scales) of a quantized matrix."""
    scale = [v for k, v in m.parts.items() if k != "weight"]
    return m.parts["weight"], scale[0]


def scale_stride(m: QMatrix) -> int:
    """Elements between scale rows (1 for int8's per-row scales)."""
    _, s = _ws(m)
    return 1 if s.dim() == len(m.shape) - 1 else int(s.shape[-1])


def quant_supported(weights: ModelWeights, formats: tuple[str, ...] = TRITON_FORMATS) -> bool:
    """Whether the quantized kernels cover this model (else the torch step dequantizes)."""
    for lw in weights.layers:
        mats: list[Matrix] = [lw.attn.q_proj, lw.attn.kv_a, lw.attn.o_proj]
        mw = lw.mlp
        if isinstance(mw, MoEWeights):
            mats += [mw.gate_up, mw.down, mw.up, mw.shared.gate, mw.shared.up, mw.shared.down]
            inter = mw.down.shape[-1]
            if inter % BLOCK_N or mw.top_k > 16 or mw.router.shape[0] & (mw.router.shape[0] - 1):
                return False
            if mw.n_group > 1 and mw.topk_group < mw.n_group or mw.shared.gate.shape[0] % inter:
                return False
        else:
            mats += [mw.gate, mw.up, mw.down]
        if not all(isinstance(m, QMatrix) and m.fmt in formats and m.is_contiguous() for m in mats):
            return False
    return weights.embed.shape[-1] % BLOCK_N == 0


class QuantTritonStep(TritonStep):
    """`TritonStep` for a model whose matrices are `QMatrix`es."""

    def _gemv2(self, x: torch.Tensor, a: QMatrix, b: QMatrix | None):
        from kimi_cli.engine.fast.quant_kernels import BLOCK_K, FMT_CODES

        n_a, n_b = a.shape[0], (0 if b is None else b.shape[0])
        out_a = torch.empty(1, n_a, device=x.device, dtype=x.dtype)
        out_b = None if b is None else torch.empty(1, n_b, device=x.device, dtype=x.dtype)
        aw, asc = _ws(a)
        bw, bsc = _ws(b if b is not None else a)
        grid = (triton.cdiv(n_a, BLOCK_N) + triton.cdiv(n_b, BLOCK_N),)
        self.qk.qgemv2_kernel[grid](
            x, aw, asc, bw, bsc, out_a, out_a if out_b is None else out_b, n_a, max(n_b, 1),
            scale_stride(a), scale_stride(b if b is not None else a), K=x.shape[-1],
            FMT=FMT_CODES[a.fmt], BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=self.cfg.expert_warps,
        )  # fmt: skip
        return out_a, out_b

    def _dense(self, h: torch.Tensor, dw) -> torch.Tensor:
        gate, up = self._gemv2(h, dw.gate, dw.up)
        return self._gemv2(F.silu(gate) * up, dw.down, None)[0]

    def _moe(self, x: torch.Tensor, a: torch.Tensor, lw: LayerWeights, next_norm: tuple[torch.Tensor, float]):
        from kimi_cli.engine.fast.quant_kernels import BLOCK_K, FMT_CODES

        mw, cfg, tk, qk = lw.mlp, self.cfg, self.tk, self.qk
        hid = x.shape[-1]
        experts, inter, top_k = mw.router.shape[0], mw.down.shape[-1], mw.top_k
        halves = mw.shared.gate.shape[0] // inter
        x2, h2 = torch.empty_like(x), torch.empty_like(x)
        logits = torch.empty(experts, device=x.device, dtype=torch.float32)
        block = triton_block(hid)
        tk.add_norm_router_kernel[(experts,)](x, a, lw.post_norm, mw.router, x2, h2, logits, hid, lw.eps, BLOCK=block)
        act = torch.empty(top_k + halves, inter, device=x.device, dtype=x.dtype)
        ids = torch.empty(top_k, device=x.device, dtype=torch.int32)
        wts = torch.empty(top_k, device=x.device, dtype=torch.float32)
        (gw, gs), (uw, us), (dw, ds) = _ws(mw.gate_up), _ws(mw.up), _ws(mw.down)
        (sgw, sgs), (suw, sus), (sdw, sds) = _ws(mw.shared.gate), _ws(mw.shared.up), _ws(mw.shared.down)
        fmt = FMT_CODES[mw.down.fmt]
        qk.qexperts_up_kernel[(top_k + halves, inter // BLOCK_N)](
            h2, logits, mw.bias, gw, gs, uw, us, sgw, sgs, suw, sus, act, ids, wts, mw.scale,
            gw[0].numel(), gs[0].numel(), scale_stride(mw.gate_up), scale_stride(mw.shared.gate),
            HID=hid, INTER=inter, E=experts, K=top_k, KP=max(triton_block(top_k), 2), NORM=mw.norm_topk_prob,
            FMT=fmt, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=cfg.expert_warps,
        )  # fmt: skip
        part = torch.empty(top_k + 1, hid, device=x.device, dtype=torch.float32)
        qk.qexperts_down_kernel[(hid // BLOCK_N, top_k + 1)](
            act, ids, wts, dw, ds, sdw, sds, part, dw[0].numel(), ds[0].numel(), scale_stride(mw.down),
            scale_stride(mw.shared.down), SHARED=halves, HID=hid, INTER=inter, K=top_k, FMT=fmt,
            BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=cfg.expert_warps,
        )  # fmt: skip
        x3, h3 = torch.empty_like(x), torch.empty_like(x)
        tk.reduce_norm_kernel[(1,)](x2, part, next_norm[0], x3, h3, hid, next_norm[1], SLOTS=top_k + 1, BLOCK=block)
        return x3, h3


def make_quant_step(weights: ModelWeights, cache, rope, config=None) -> QuantTritonStep:
    """The quantized step (imports the kernels)."""
    from kimi_cli.engine.fast import quant_kernels

    step = QuantTritonStep(weights, cache, rope, config)
    step.qk = quant_kernels
    return step


try:
    import triton
except ImportError:  # pragma: no cover
    triton = None
