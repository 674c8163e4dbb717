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
from kimi_cli.engine.fast.weights import LayerWeights, ModelWeights, MoEWeights


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
        return F.linear(x, self.w.lm_head).float().view(-1)


@dataclass(frozen=True)
class KernelConfig:
    """Launch shapes of the Triton kernels (tuned on an H100; see benchmarks/NOTES.md)."""

    attn_block: int = 32
    max_splits: int = 128
    up_block_n: int = 32
    up_block_k: int = 256
    down_block_n: int = 32
    down_block_k: int = 256
    attn_warps: int = 4
    expert_warps: int = 4


def triton_supported(weights: ModelWeights) -> bool:
    """Whether the Triton kernels cover this model's shapes (else the torch step is used)."""
    pow2 = (weights.num_heads, weights.kv_lora, weights.rope_dim)
    if any(v & (v - 1) or v < 16 for v in pow2):
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


class TritonStep:
    """The fast step: fused Triton kernels plus cuBLAS for the dense matrix-vector products."""

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
        blocks = -(-cache.max_len // self.cfg.attn_block)
        # a power-of-two trip count bounds how many kernel variants the buckets compile
        self.iters = triton_block(-(-blocks // self.cfg.max_splits))
        self.splits = -(-blocks // self.iters)
        self.splits_pow2 = 1 << (self.splits - 1).bit_length()

    def _norm(self, x: torch.Tensor, d: torch.Tensor | None, w: torch.Tensor, eps: float):
        n = x.shape[-1]
        x_out, h = torch.empty_like(x), torch.empty_like(x)
        block = triton_block(n)
        self.tk.rmsnorm_kernel[(1,)](
            x, x if d is None else d, w, x_out, h, n, eps, HAS_D=d is not None, BLOCK=block
        )
        return (x if d is None else x_out), h

    def _attention(self, i: int, lw: LayerWeights, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        w, aw, cfg = self.w, lw.attn, self.cfg
        heads, nope, kv, rope = w.num_heads, w.nope_dim, w.kv_lora, w.rope_dim
        q = F.linear(h, aw.q_proj)
        ckv = F.linear(h, aw.kv_a)
        q_pe = torch.empty(heads, rope, device=h.device, dtype=h.dtype)
        c, k = self.cache.c[i], self.cache.k[i]
        self.tk.latent_prep_kernel[(1,)](
            ckv, q, aw.kv_norm, self.rope, pos, c, k, q_pe, aw.kv_norm_eps, self.cache.max_len,
            KV=kv, HALF=rope // 2, H=heads, QDIM=nope + rope, NOPE=nope,
        )  # fmt: skip
        q_lat = torch.bmm(q.view(heads, 1, nope + rope)[:, :, :nope], aw.w_uk).view(heads, kv)
        acc = torch.empty(self.splits, heads, kv, device=h.device, dtype=torch.float32)
        lse = torch.empty(self.splits, heads, device=h.device, dtype=torch.float32)
        self.tk.mla_split_kernel[(self.splits,)](
            q_lat, q_pe, c, k, pos, acc, lse, aw.scaling,
            H=heads, KV=kv, R=rope, BLOCK_N=cfg.attn_block, ITERS=self.iters, num_warps=cfg.attn_warps,
        )  # fmt: skip
        o_lat = torch.empty(heads, kv, device=h.device, dtype=h.dtype)
        block_d = min(kv, 128)
        self.tk.mla_combine_kernel[(heads, kv // block_d)](
            acc, lse, o_lat, self.splits, H=heads, KV=kv, S=self.splits_pow2, BLOCK_D=block_d,
            BLOCK_S=min(self.splits_pow2, 16),
        )  # fmt: skip
        return ref.attention_output(o_lat, aw)

    def _moe(self, x: torch.Tensor, a: torch.Tensor, lw: LayerWeights, next_norm: tuple[torch.Tensor, float]):
        mw, cfg, tk = lw.mlp, self.cfg, self.tk
        hid = x.shape[-1]
        experts, inter, top_k = mw.router.shape[0], mw.down.shape[-1], mw.top_k
        slots = top_k + mw.shared.gate.shape[0] // inter
        x2, h2 = torch.empty_like(x), torch.empty_like(x)
        logits = torch.empty(experts, device=x.device, dtype=torch.float32)
        block = triton_block(hid)
        tk.add_norm_router_kernel[(experts,)](
            x, a, lw.post_norm, mw.router, x2, h2, logits, hid, lw.eps, BLOCK=block
        )
        act = torch.empty(slots, inter, device=x.device, dtype=x.dtype)
        ids = torch.empty(top_k, device=x.device, dtype=torch.int32)
        wts = torch.empty(top_k, device=x.device, dtype=torch.float32)
        up_n, up_k = min(cfg.up_block_n, inter), min(cfg.up_block_k, hid)
        tk.experts_up_kernel[(slots, inter // up_n)](
            h2, logits, mw.bias, mw.gate_up, mw.shared.gate, mw.shared.up, act, ids, wts, mw.scale,
            HID=hid, INTER=inter, E=experts, K=top_k, KP=max(triton_block(top_k), 2), NORM=mw.norm_topk_prob,
            BLOCK_N=up_n, BLOCK_K=up_k, num_warps=cfg.expert_warps,
        )  # fmt: skip
        part = torch.empty(slots, hid, device=x.device, dtype=torch.float32)
        dn_n, dn_k = min(cfg.down_block_n, hid), min(cfg.down_block_k, triton_block(inter))
        tk.experts_down_kernel[(hid // dn_n, slots)](
            act, ids, wts, mw.down, mw.shared.down, part,
            HID=hid, INTER=inter, K=top_k, BLOCK_N=dn_n, BLOCK_K=dn_k, num_warps=cfg.expert_warps,
        )  # fmt: skip
        x3, h3 = torch.empty_like(x), torch.empty_like(x)
        tk.reduce_norm_kernel[(1,)](
            x2, part, next_norm[0], x3, h3, hid, next_norm[1], SLOTS=slots, BLOCK=block
        )
        return x3, h3

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
                x, h = self._norm(x, ref.dense_mlp(h2, lw.mlp), *next_norm)
        return F.linear(h, w.lm_head).float().view(-1)


def triton_block(n: int) -> int:
    """The smallest power of two >= n (Triton's `tl.arange` needs powers of two)."""
    return 1 << max(n - 1, 0).bit_length()
