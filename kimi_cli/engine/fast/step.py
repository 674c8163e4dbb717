"""One decode step (one token, batch 1) through all layers, in two interchangeable implementations.

`TorchStep` uses the pure-torch operations of `reference.py` (CPU, or a GPU without Triton);
`TritonStep` uses the fused kernels of `triton_kernels.py` around cuBLAS matrix-vector products.
Both write the new latent row at `pos` and return float32 logits; both are CUDA-graph capturable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from kimi_cli.engine.fast import reference as ref
from kimi_cli.engine.fast.cache import LatentCache
from kimi_cli.engine.fast.weights import LayerWeights, ModelWeights, MoEWeights, QMatrix


class StepImpl(Protocol):
    """Runs one token at device position `pos`; `length` bounds the positions attended (torch path)."""

    def forward(self, token: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        """Return float32 logits [vocab] for `token` [1] at position `pos` [1]."""
        ...


class TorchStep:
    """The reference step: torch operations only."""

    def __init__(self, weights: ModelWeights, cache: LatentCache, rope: torch.Tensor) -> None:
        self.w, self.cache, self.rope = weights, cache, rope

    def _layer(self, i: int, lw: LayerWeights, x: torch.Tensor, pos: torch.Tensor, cs: torch.Tensor, n: int):
        c, k = self.cache.c[i], self.cache.k[i]
        h = ref.rms_norm(x, lw.in_norm, lw.eps)
        ref.write_latent(h, lw.attn, c, k, pos, cs[0], cs[1])
        q_lat, q_pe = ref.absorbed_query(h, lw.attn, cs[0], cs[1])
        o_lat = ref.latent_attention(q_lat, q_pe, c, k, pos, n, lw.attn.scaling)
        x = x + ref.attention_output(o_lat, lw.attn)
        h = ref.rms_norm(x, lw.post_norm, lw.eps)
        mlp = ref.moe(h, lw.mlp) if isinstance(lw.mlp, MoEWeights) else ref.dense_mlp(h, lw.mlp)
        return x + mlp

    def forward(self, token: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        """Return float32 logits [vocab]; attends over cache positions [0, length) masked to <= pos."""
        x = self.w.embed.index_select(0, token)
        cs = self.rope.index_select(1, pos)
        for i, lw in enumerate(self.w.layers):
            x = self._layer(i, lw, x, pos, cs, length)
        x = ref.rms_norm(x, self.w.final_norm, self.w.final_eps)
        return ref.linear(x, self.w.lm_head).float().view(-1)


def is_quantized(weights: ModelWeights) -> bool:
    """Whether any matrix the step reads is stored in a quantized format."""
    lw = weights.layers[-1]
    return isinstance(lw.attn.q_proj, QMatrix)


@dataclass(frozen=True)
class KernelConfig:
    """Launch shapes of the Triton kernels (tuned on an H100, up_block_n on an H200; benchmarks/NOTES.md)."""

    attn_block: int = 64
    max_splits: int = 256
    up_block_n: int = 64
    up_block_k: int = 256
    down_block_n: int = 32
    down_block_k: int = 128
    attn_warps: int = 8
    expert_warps: int = 4
    triton_gemv: bool = True
    gemv_block_n: int = 16
    #: 512 columns a chunk (with the elementwise products): 377.6 against 371.2 tok/s at 256 in
    #: qkernel_bench's replay on an H100 (2026-12-07)
    gemv_block_k: int = 512
    #: elementwise float32 multiply-adds instead of `tl.dot` against the padded vector, in the
    #: projections' gemv / the experts' kernels: replays at 512 on an H200 (2026-12-04, run AL) 416.5 tok/s
    #: with neither, 430.2 with the gemv's at 16 rows a program, 424.5 with the experts'
    gemv_fma: bool = True
    expert_fma: bool = True
    pdl: bool | None = None  # programmatic dependent launch; None: the step's default (`TritonStep.dependent_launch`)
    prefetch: bool = True  # with it, the projections ask L2 for their weights before waiting
    #: with dependent launch on, the kernels (named as in `pdl_skip`; "*": all) that let the next one
    #: launch at each program's end rather than at their start; None: the step's own (`TritonStep.pdl_late`)
    pdl_late: tuple[str, ...] | None = None
    #: kernels (names as in `triton_kernels` / `quant_kernels`, without `_kernel`) that launch plainly
    #: even when dependent launch is on: each waits for the whole kernel before it, as without it
    #: (None: the step's own list, `TritonStep.pdl_skip`)
    pdl_skip: tuple[str, ...] | None = None
    #: how an MoE layer is closed (residual add and the next norm): 0 by `reduce_norm_kernel` after the
    #: experts' down kernel, 1 by the down kernel's last program, 2 by the last program of each of its
    #: row blocks and then the last block (`close_kernels._close_layer`); None: the step's own choice
    #: (`TritonStep.close`, or the format's `QuantLaunch.close`)
    close: int | None = None


def triton_supported(weights: ModelWeights) -> bool:
    """Whether the Triton kernels cover this model's shapes (else the torch step is used)."""
    pow2 = (weights.num_heads, weights.kv_lora, weights.rope_dim, weights.nope_dim, weights.v_dim)
    if any(v & (v - 1) or v < 16 for v in pow2):
        return False
    if weights.embed.shape[-1] % 16:
        return False
    if is_quantized(weights):
        from kimi_cli.engine.fast.quant_step import quant_supported

        strided = all(lw.attn.w_uk.stride()[1:] == (weights.kv_lora, 1) for lw in weights.layers)
        return strided and quant_supported(weights)
    for lw in weights.layers:
        aw = lw.attn
        dense = (aw.q_proj, aw.kv_a, aw.o_proj)
        if aw.w_uk.stride()[1:] != (weights.kv_lora, 1) or not all(t.is_contiguous() for t in dense):
            return False
        mw = lw.mlp
        if isinstance(mw, MoEWeights) and not all(
            t.is_contiguous()
            for t in (mw.gate_up, mw.down, mw.router, mw.shared.gate, mw.shared.up, mw.shared.down)
        ):
            return False
    for lw in weights.layers:
        mw = lw.mlp
        if isinstance(mw, MoEWeights):
            inter = mw.down.shape[-1]
            if (mw.n_group > 1 and mw.topk_group < mw.n_group) or mw.shared.gate.shape[0] % inter:
                return False
            if inter % 16 or mw.top_k > 16 or mw.router.shape[0] & (mw.router.shape[0] - 1):
                return False
    return True


#: the most row blocks an experts' down kernel may have to close its layer a block at a time
MAX_ROW_BLOCKS = 256


def split_plan(max_len: int, cfg: KernelConfig) -> tuple[int, int, int]:
    """(blocks per split, splits, splits rounded up to a power of two) of the split attention over a
    cache of `max_len` positions: the only launch parameters that depend on the context bucket.

    A power-of-two trip count bounds how many kernel variants the buckets compile.
    """
    blocks = -(-max_len // cfg.attn_block)
    iters = triton_block(-(-blocks // cfg.max_splits))
    splits = -(-blocks // iters)
    return iters, splits, 1 << (splits - 1).bit_length()


class TritonStep:
    """The fast step: fused Triton kernels plus cuBLAS for the dense matrix-vector products."""

    #: whether `KernelConfig.pdl=None` turns dependent launch on where the GPU has it: not for bf16,
    #: whose step replays 9% slower with it on an H200 (416 -> 379 tok/s at 512; benchmarks/NOTES.md)
    dependent_launch: bool = False
    #: the kernels that launch plainly when dependent launch is on (`KernelConfig.pdl_skip`)
    pdl_skip: tuple[str, ...] = ()
    #: `KernelConfig.pdl_late` by default: the kernels whose next kernel launches as their programs end
    pdl_late: tuple[str, ...] = ()
    #: `KernelConfig.close` by default: the down kernel's last program (bf16 replays 414.0 against 410.8
    #: tok/s with `reduce_norm_kernel` on an H200; benchmarks/NOTES.md)
    close: int = 1

    def __init__(
        self,
        weights: ModelWeights,
        cache: LatentCache,
        rope: torch.Tensor,
        config: KernelConfig | None = None,
    ) -> None:
        from kimi_cli.engine.fast import triton_kernels as tk

        self.tk, self.w, self.cache, self.rope = tk, weights, cache, rope
        self.cfg = config or KernelConfig()
        self.iters, self.splits, self.splits_pow2 = split_plan(cache.max_len, self.cfg)
        pdl = self.cfg.pdl
        if pdl is None:
            pdl = self.dependent_launch and pdl_default(weights.embed.device)
        #: passed to a kernel launch (`gdc_for`): the kernels' PDL switch (0 off; 1 the next kernel may
        #: launch from this one's start, 2 from its programs' ends: `triton_kernels._gdc`, `_gdc_end`)
        #: and Triton's launch option, together
        self.gdc = {"PDL": int(bool(pdl)), "launch_pdl": bool(pdl)}
        #: per layer, the counts of the down kernel's programs (`KernelConfig.close`: one for the layer,
        #: then one per row block) and the row blocks' sums of squares; rows a multiple of 16 bytes long
        #: (every layer's pointers aligned alike: one compiled variant); each step leaves the counts at 0
        layers, dev = len(weights.layers), weights.embed.device
        self.counts = torch.zeros(layers, 1 + MAX_ROW_BLOCKS + 15, dtype=torch.int32, device=dev)
        self.ssq = torch.zeros(layers, MAX_ROW_BLOCKS, dtype=torch.float32, device=dev)
        self._index = {id(lw): i for i, lw in enumerate(weights.layers)}

    def gdc_for(self, kernel: str) -> dict[str, int | bool]:
        """`gdc` for one kernel: off for the kernels `KernelConfig.pdl_skip` names, triggered at the
        programs' ends for those `KernelConfig.pdl_late` names."""
        skip = self.pdl_skip if self.cfg.pdl_skip is None else self.cfg.pdl_skip
        late = self.pdl_late if self.cfg.pdl_late is None else self.cfg.pdl_late
        if self.gdc["PDL"] and kernel in skip:
            return {"PDL": 0, "launch_pdl": False}
        if self.gdc["PDL"] and (kernel in late or "*" in late):
            return {"PDL": 2, "launch_pdl": True}
        return self.gdc

    def _norm(self, x: torch.Tensor, d: torch.Tensor | None, w: torch.Tensor, eps: float):
        n = x.shape[-1]
        x_out, h = torch.empty_like(x), torch.empty_like(x)
        block = triton_block(n)
        self.tk.rmsnorm_kernel[(1,)](
            x, x if d is None else d, w, x_out, h, n, eps, HAS_D=d is not None, BLOCK=block,
            **self.gdc_for("rmsnorm")
        )
        return (x if d is None else x_out), h

    def _attention(self, i: int, lw: LayerWeights, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        w, aw, cfg, tk = self.w, lw.attn, self.cfg, self.tk
        heads, nope, kv, rope, v = w.num_heads, w.nope_dim, w.kv_lora, w.rope_dim, w.v_dim
        q, ckv = self._gemv2(h, aw.q_proj, aw.kv_a)
        q_pe = torch.empty(heads, rope, device=h.device, dtype=h.dtype)
        q_lat = torch.empty(heads, kv, device=h.device, dtype=h.dtype)
        c, k = self.cache.c[i], self.cache.k[i]
        block_c = min(64, kv)
        tk.latent_prep_kernel[(heads + 1, kv // block_c)](
            ckv, q, aw.kv_norm, self.rope, pos, c, k, q_pe, aw.w_uk, q_lat, aw.kv_norm_eps, self.cache.max_len,
            aw.w_uk.stride(0), KV=kv, HALF=rope // 2, H=heads, QDIM=nope + rope, NOPE=nope, BLOCK_C=block_c,
            **self.gdc_for("latent_prep"),
        )  # fmt: skip
        acc = torch.empty(self.splits, heads, kv, device=h.device, dtype=torch.float32)
        lse = torch.empty(self.splits, heads, device=h.device, dtype=torch.float32)
        tk.mla_split_kernel[(self.splits,)](
            q_lat, q_pe, c, k, pos, acc, lse, aw.scaling,
            H=heads, KV=kv, R=rope, BLOCK_N=cfg.attn_block, ITERS=self.iters, num_warps=cfg.attn_warps,
            **self.gdc_for("mla_split"),
        )  # fmt: skip
        o_lat = torch.empty(heads, kv, device=h.device, dtype=h.dtype)
        block_d = min(32, kv)
        tk.mla_combine_kernel[(heads, kv // block_d)](
            acc, lse, o_lat, self.splits, H=heads, KV=kv, S=self.splits_pow2, BLOCK_D=block_d,
            **self.gdc_for("mla_combine")
        )
        o = torch.empty(1, heads * v, device=h.device, dtype=h.dtype)
        block_v = min(16, v)
        tk.head_proj_kernel[(heads, v // block_v)](
            o_lat, aw.w_uv, o, aw.w_uv.stride(0), KV=kv, V=v, BLOCK_V=block_v, **self.gdc_for("head_proj")
        )
        return self._gemv2(o, aw.o_proj, None)[0]

    def _gemv2(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor | None):
        """(A @ x, B @ x) for one token as [1, N] rows: one Triton launch, or cuBLAS when configured."""
        cfg = self.cfg
        rows = a.shape[0] + (0 if b is None else b.shape[0])
        if not cfg.triton_gemv or a.shape[0] % cfg.gemv_block_n or rows % cfg.gemv_block_n:
            return F.linear(x, a), (None if b is None else F.linear(x, b))
        out_a = torch.empty(1, a.shape[0], device=x.device, dtype=x.dtype)
        out_b = None if b is None else torch.empty(1, b.shape[0], device=x.device, dtype=x.dtype)
        self.tk.gemv2_kernel[(rows // cfg.gemv_block_n,)](
            x, a, a if b is None else b, out_a, out_a if out_b is None else out_b, a.shape[0],
            K=x.shape[-1], BLOCK_N=cfg.gemv_block_n, BLOCK_K=min(cfg.gemv_block_k, x.shape[-1]),
            num_warps=cfg.expert_warps, PREFETCH=self.prefetch_lines(x.shape[-1] * a.element_size()),
            **self.gdc_for("gemv2"), **({"FMA": True} if cfg.gemv_fma else {}),
        )  # fmt: skip
        return out_a, out_b

    def prefetch_lines(self, row_bytes: int, kernel: str = "gemv2") -> int:
        """The 128-byte lines of a weight row a projection asks L2 for before it waits (0: none)."""
        if not (self.gdc_for(kernel)["PDL"] and self.cfg.prefetch):
            return 0
        return triton_block(-(-row_bytes // 128))

    def _moe(self, x: torch.Tensor, a: torch.Tensor, lw: LayerWeights, next_norm: tuple[torch.Tensor, float]):
        mw, cfg, tk = lw.mlp, self.cfg, self.tk
        hid = x.shape[-1]
        experts, inter, top_k = mw.router.shape[0], mw.down.shape[-1], mw.top_k
        slots = top_k + mw.shared.gate.shape[0] // inter
        x2, h2 = torch.empty_like(x), torch.empty_like(x)
        logits = torch.empty(experts, device=x.device, dtype=torch.float32)
        block = triton_block(hid)
        tk.add_norm_router_kernel[(experts,)](
            x, a, lw.post_norm, mw.router, x2, h2, logits, hid, lw.eps, BLOCK=block,
            **self.gdc_for("add_norm_router")
        )
        act = torch.empty(slots, inter, device=x.device, dtype=x.dtype)
        ids = torch.empty(top_k, device=x.device, dtype=torch.int32)
        wts = torch.empty(top_k, device=x.device, dtype=torch.float32)
        up_n, up_k = min(cfg.up_block_n, inter), min(cfg.up_block_k, hid)
        while inter % up_n:  # a row block that divides the expert width (16 always does: triton_supported)
            up_n //= 2
        tk.experts_up_kernel[(slots, inter // up_n)](
            h2, logits, mw.bias, mw.gate_up, mw.shared.gate, mw.shared.up, act, ids, wts, mw.scale,
            HID=hid, INTER=inter, E=experts, K=top_k, KP=max(triton_block(top_k), 2), NORM=mw.norm_topk_prob,
            BLOCK_N=up_n, BLOCK_K=up_k, num_warps=cfg.expert_warps, **self.gdc_for("experts_up"),
            **({"FMA": True} if cfg.expert_fma else {}),
        )  # fmt: skip
        part = torch.empty(slots, hid, device=x.device, dtype=torch.float32)
        dn_n, dn_k = min(cfg.down_block_n, hid), min(cfg.down_block_k, triton_block(inter))
        level = self.close_level(self.close, hid // dn_n)
        close, x3, h3 = self._closing(lw, x2, next_norm)
        tk.experts_down_kernel[(hid // dn_n, slots)](
            act, ids, wts, mw.down, mw.shared.down, part, *close,
            HID=hid, INTER=inter, K=top_k, BLOCK_N=dn_n, BLOCK_K=dn_k, CLOSE=level, SLOTS=slots, BLOCK=block,
            NB=triton_block(hid // dn_n), num_warps=cfg.expert_warps, **self.gdc_for("experts_down"),
            **({"FMA": True} if cfg.expert_fma else {}),
        )  # fmt: skip
        self._close(level, x2, part, next_norm, x3, h3, slots)
        return x3, h3

    def close_level(self, default: int, row_blocks: int) -> int:
        """`KernelConfig.close` (or `default`) for a down kernel of `row_blocks` row blocks: level 2
        needs a count and a sum per block, so more than `MAX_ROW_BLOCKS` take level 1."""
        level = default if self.cfg.close is None else self.cfg.close
        return 1 if level == 2 and row_blocks > MAX_ROW_BLOCKS else level

    def _closing(self, lw: LayerWeights, x2: torch.Tensor, next_norm: tuple[torch.Tensor, float]):
        """(the down kernel's closing arguments: counts, block sums, residual, next norm's weight, x3, h3,
        eps; x3; h3) for layer `lw`, whose MoE output the down kernel leaves in `part`."""
        x3, h3 = torch.empty_like(x2), torch.empty_like(x2)
        i = self._index[id(lw)]
        return (self.counts[i], self.ssq[i], x2, next_norm[0], x3, h3, next_norm[1]), x3, h3

    def _close(self, level: int, x2, part, next_norm, x3: torch.Tensor, h3: torch.Tensor, slots: int) -> None:
        """x3 = x2 + sum(part), h3 = next norm of x3, unless the down kernel did (`level` 1 or 2)."""
        if not level:
            self.tk.reduce_norm_kernel[(1,)](
                x2, part, next_norm[0], x3, h3, x2.shape[-1], next_norm[1], SLOTS=slots,
                BLOCK=triton_block(x2.shape[-1]), **self.gdc_for("reduce_norm")
            )

    def forward(self, token: torch.Tensor, pos: torch.Tensor, length: int) -> torch.Tensor:
        """Return float32 logits [vocab]; the kernels read `pos` on the device (`length` is unused)."""
        w = self.w
        x = w.embed.index_select(0, token)
        x, h = self._norm(x, None, w.layers[0].in_norm, w.layers[0].eps)
        for i, lw in enumerate(w.layers):
            nxt = w.layers[i + 1] if i + 1 < len(w.layers) else None
            next_norm = (nxt.in_norm, nxt.eps) if nxt is not None else (w.final_norm, w.final_eps)
            a = self._attention(i, lw, h, pos)
            if isinstance(lw.mlp, MoEWeights):
                x, h = self._moe(x, a, lw, next_norm)
            else:
                x, h2 = self._norm(x, a, lw.post_norm, lw.eps)
                x, h = self._norm(x, self._dense(h2, lw.mlp), *next_norm)
        return self._logits(h)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """float32 logits [vocab] of the final hidden state `h` (lm_head through cuBLAS)."""
        return F.linear(h, self.w.lm_head).float().view(-1)

    def _dense(self, h: torch.Tensor, mlp) -> torch.Tensor:
        """The dense (first) layer's MLP; a subclass with quantized weights replaces it."""
        return ref.dense_mlp(h, mlp)


def pdl_default(device: torch.device) -> bool:
    """Whether the decode kernels launch with programmatic dependent launch on `device` (a CUDA GPU of
    compute capability 9.0 or newer; a meta device asks about the current GPU); never under Triton's
    interpreter. Each kernel's set-up then overlaps the end of the one before it."""
    import os

    if os.environ.get("TRITON_INTERPRET") == "1" or device.type not in ("cuda", "meta"):
        return False
    if not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device.index if device.type == "cuda" else None)[0] >= 9


def triton_block(n: int) -> int:
    """The smallest power of two >= n (Triton's `tl.arange` needs powers of two)."""
    return 1 << max(n - 1, 0).bit_length()
