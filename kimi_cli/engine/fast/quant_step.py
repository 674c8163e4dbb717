"""The fast decode step over quantized weights: `TritonStep` with its products swapped for
`quant_kernels` (int8, fp8, int4 dequantized in registers, weights read in place).

Norms, latent attention and the final lm_head (bf16) are the bf16 step's kernels; the attention
projections, the dense MLP, and the routed + shared experts read the quantized parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kimi_cli.engine.fast.step import TritonStep, triton_block
from kimi_cli.engine.fast.weights import LayerWeights, Matrix, ModelWeights, MoEWeights, QMatrix

BLOCK_N = 32  # the smallest row block a launch may use; shapes must be multiples of it


@dataclass(frozen=True)
class QuantLaunch:
    """How the quantized kernels are launched for one format (see `quant_kernels._qrows_dot`)."""

    mode: int = 0  # 0: tensor-core dot per chunk; 1: elementwise float32 products; 2, 3: 1 over 32-bit words
    block_n: int = 32
    block_k: int = 128  # a multiple of 128 (the scale group) for fp8 and int4; 128 for fp8's mode 0
    warps: int = 4
    stages: int = 3
    gemv_n: int = 0  # rows a program of the attention projections' and dense MLP's products (0: block_n)
    down_n: int = 0  # rows a program of the experts' down product (0: block_n)
    down_k: int = 0  # columns a chunk of the experts' down product (0: block_k)
    close: int = 0  # how the down kernel closes an MoE layer (`KernelConfig.close`)
    #: the kernels triggering dependent launch at their programs' ends (`KernelConfig.pdl_late`)
    late: tuple[str, ...] = ()


#: Launch shapes per format, the fastest of benchmarks/qkernel_bench.py's sweeps on an H200 (Triton 3.6,
#: synthetic full-size model, 512 context, 2026-12-02; benchmarks/NOTES.md): wide K chunks keep enough
#: bytes in flight per program, and the attention projections (114 programs of 32 rows would be under
#: one wave of 132 SMs) take 8-16 rows a program. int8 and int4 read 32-bit words and widen each value
#: into the mantissa of 1.0 (mode 3: int8 599.3 tok/s against mode 2's 575.3, int4 551.9 against 519.1,
#: 2026-12-04), int4 then in chunks of 2,048 columns (569.5 against 556.6 for 1,024); fp8 multiplies
#: elementwise. int8 and int4 close each MoE layer in the down kernel only when that kernel lets the
#: next one launch at its programs' ends (int8 575.9 tok/s against 556.6, int4 520.6 against 517.1; fp8
#: loses with it, 549.2 against 580.2: run AF, 2026-12-04). The tensor-core mode (0) is slower for every
#: format at batch 1 (int8: 0.67x of its best); on this GPU int4's and an early fp8 tensor-core kernel
#: also differed from the torch step, so neither may use it.
LAUNCH = {
    "int8": QuantLaunch(mode=3, block_n=32, block_k=512, gemv_n=8, close=1, late=("qexperts_down",)),
    "fp8": QuantLaunch(mode=1, block_n=32, block_k=256, warps=8, gemv_n=16, down_n=16, close=1),
    "int4": QuantLaunch(mode=3, block_n=16, block_k=2048, gemv_n=8, close=1, late=("qexperts_down",)),
}
#: The modes each format may use (fp8's word mode 2 is not yet measured on a GPU: 2026-12-04).
MODES = {"int8": (0, 1, 2, 3), "fp8": (1, 2), "int4": (1, 2, 3)}

#: Formats the Triton kernels run by default (all three since fp8's elementwise kernel matched the
#: torch reference on an H200, 2026-12-02).
TRITON_FORMATS = ("int8", "fp8", "int4")


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

    launch: dict[str, QuantLaunch] = LAUNCH
    #: on where the GPU has it: int8's step replays 7-8% faster with it on an H200 (507 -> 543 tok/s
    #: at 512, 550 with the projections' L2 prefetch; benchmarks/NOTES.md)
    dependent_launch: bool = True

    def _launch(self, fmt: str, *dims: int, ks: tuple[int, ...] = (), down: int = 0) -> QuantLaunch:
        """The format's launch shape fitted to what its kernels can run: the row block shrunk to one
        that divides `dims` (and the down product's to one that divides `down`, its output width; 0: any);
        `ks` are the reduction lengths the launch walks (the word mode needs multiples of 8)."""
        la = self.launch[fmt]
        mode = la.mode if la.mode in MODES[fmt] else MODES[fmt][0]
        if mode >= 2 and any(k % 8 for k in ks):
            mode = 1  # the word modes read whole 32-bit words of 8 int4 (or 4 int8 or fp8) values

        def rows(n: int, *divides: int) -> int:
            while n > BLOCK_N and any(d % n for d in divides):
                n //= 2
            if fmt == "fp8":  # a program's rows must lie in one 128-row scale block
                n = min(n, 128)
            return max(n, 16) if mode == 0 else n  # the tensor-core mode's `tl.dot` needs 16 rows or more

        def chunk(k: int) -> int:  # fp8's and int4's chunks hold whole scale groups (fp8 mode 0: one)
            return k if fmt == "int8" or (k % 128 == 0 and not (fmt == "fp8" and mode == 0)) else 128

        block_n = rows(la.block_n, *dims)
        return QuantLaunch(mode, block_n, chunk(la.block_k), la.warps, la.stages, rows(la.gemv_n or block_n),
                           rows(la.down_n or block_n, down), chunk(la.down_k or la.block_k), la.close, la.late)

    @property
    def pdl_late(self) -> tuple[str, ...]:  # type: ignore[override]
        """The step's own `KernelConfig.pdl_late`: its format's (`QuantLaunch.late`)."""
        fmts = {lw.mlp.down.fmt for lw in self.w.layers if isinstance(lw.mlp, MoEWeights)}
        return self.launch[fmts.pop()].late if len(fmts) == 1 and fmts <= self.launch.keys() else ()

    def _gemv2(self, x: torch.Tensor, a: QMatrix, b: QMatrix | None):
        from kimi_cli.engine.fast.quant_kernels import FMT_CODES

        la = self._launch(a.fmt, ks=(x.shape[-1],))
        n_a, n_b = a.shape[0], (0 if b is None else b.shape[0])
        out_a = torch.empty(1, n_a, device=x.device, dtype=x.dtype)
        out_b = None if b is None else torch.empty(1, n_b, device=x.device, dtype=x.dtype)
        aw, asc = _ws(a)
        bw, bsc = _ws(b if b is not None else a)
        grid = (-(-n_a // la.gemv_n) - (-n_b // la.gemv_n),)  # ceil divisions, no Triton needed to plan
        self.qk.qgemv2_kernel[grid](
            x, aw, asc, bw, bsc, out_a, out_a if out_b is None else out_b, n_a, max(n_b, 1),
            scale_stride(a), scale_stride(b if b is not None else a), K=x.shape[-1],
            FMT=FMT_CODES[a.fmt], BLOCK_N=la.gemv_n, BLOCK_K=la.block_k, MODE=la.mode,
            num_warps=la.warps, num_stages=la.stages, **self.gdc_for("qgemv2"),
            PREFETCH=self.prefetch_lines(x.shape[-1] // 2 if a.fmt == "int4" else x.shape[-1], "qgemv2"),
        )  # fmt: skip
        return out_a, out_b

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """lm_head through the quantized gemv when it is quantized (`formats.HEAD_FORMAT`), else cuBLAS."""
        if not isinstance(self.w.lm_head, QMatrix):
            return super()._logits(h)
        return self._gemv2(h, self.w.lm_head, None)[0].float().view(-1)

    def _dense(self, h: torch.Tensor, dw) -> torch.Tensor:
        gate, up = self._gemv2(h, dw.gate, dw.up)
        return self._gemv2(F.silu(gate) * up, dw.down, None)[0]

    def _moe(self, x: torch.Tensor, a: torch.Tensor, lw: LayerWeights, next_norm: tuple[torch.Tensor, float]):
        from kimi_cli.engine.fast.quant_kernels import FMT_CODES

        mw, tk, qk = lw.mlp, self.tk, self.qk
        hid = x.shape[-1]
        experts, inter, top_k = mw.router.shape[0], mw.down.shape[-1], mw.top_k
        halves = mw.shared.gate.shape[0] // inter
        x2, h2 = torch.empty_like(x), torch.empty_like(x)
        logits = torch.empty(experts, device=x.device, dtype=torch.float32)
        block = triton_block(hid)
        tk.add_norm_router_kernel[(experts,)](
            x, a, lw.post_norm, mw.router, x2, h2, logits, hid, lw.eps, BLOCK=block,
            **self.gdc_for("add_norm_router")
        )
        act = torch.empty(top_k + halves, inter, device=x.device, dtype=x.dtype)
        ids = torch.empty(top_k, device=x.device, dtype=torch.int32)
        wts = torch.empty(top_k, device=x.device, dtype=torch.float32)
        (gw, gs), (uw, us), (dw, ds) = _ws(mw.gate_up), _ws(mw.up), _ws(mw.down)
        (sgw, sgs), (suw, sus), (sdw, sds) = _ws(mw.shared.gate), _ws(mw.shared.up), _ws(mw.shared.down)
        fmt = FMT_CODES[mw.down.fmt]
        la = self._launch(mw.down.fmt, inter, hid, ks=(hid, inter, halves * inter), down=hid)
        qk.qexperts_up_kernel[(top_k + halves, inter // la.block_n)](
            h2, logits, mw.bias, gw, gs, uw, us, sgw, sgs, suw, sus, act, ids, wts, mw.scale,
            gw[0].numel(), gs[0].numel(), scale_stride(mw.gate_up), scale_stride(mw.shared.gate),
            HID=hid, INTER=inter, E=experts, K=top_k, KP=max(triton_block(top_k), 2), NORM=mw.norm_topk_prob,
            FMT=fmt, BLOCK_N=la.block_n, BLOCK_K=la.block_k, MODE=la.mode, num_warps=la.warps, num_stages=la.stages,
            **self.gdc_for("qexperts_up"),
        )  # fmt: skip
        # the shared experts' halves as slots of their own where a half starts on a scale group
        split = mw.down.fmt == "int8" or inter % 128 == 0
        slots = top_k + (halves if split else 1)
        part = torch.empty(slots, hid, device=x.device, dtype=torch.float32)
        level = self.close_level(la.close, hid // la.down_n)
        close, x3, h3 = self._closing(lw, x2, next_norm)
        qk.qexperts_down_kernel[(hid // la.down_n, slots)](
            act, ids, wts, dw, ds, sdw, sds, part, dw[0].numel(), ds[0].numel(), scale_stride(mw.down),
            scale_stride(mw.shared.down), *close, SHARED=halves, SPLIT=split, HID=hid, INTER=inter, K=top_k,
            FMT=fmt, BLOCK_N=la.down_n, BLOCK_K=la.down_k, MODE=la.mode, CLOSE=level, SLOTS=slots, BLOCK=block,
            NB=triton_block(hid // la.down_n), num_warps=la.warps, num_stages=la.stages,
            **self.gdc_for("qexperts_down"),
        )  # fmt: skip
        self._close(level, x2, part, next_norm, x3, h3, slots)
        return x3, h3


def make_quant_step(weights: ModelWeights, cache, rope, config=None,
                    launch: dict[str, QuantLaunch] | None = None) -> QuantTritonStep:
    """The quantized step (imports the kernels); `launch` overrides `LAUNCH` per format."""
    from kimi_cli.engine.fast import quant_kernels

    step = QuantTritonStep(weights, cache, rope, config)
    step.qk = quant_kernels
    if launch:
        step.launch = {**LAUNCH, **launch}
    return step

