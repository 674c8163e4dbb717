"""The language model's prefill with fewer passes over memory: three Triton kernels (GPU fast path only).

A prefill runs transformers' own forward (it is compute-bound), but around its matrix products
transformers spends a third of the GPU time on elementwise passes. Profiled on the H200 for a
1792x1792 image's 4,147-token prompt (72.6 ms of GPU time): each MoE layer weights its 24,882
token-expert rows in float32 (a 204 MB product, 218 us), gathers them back into token order (a
second 204 MB pass), sums and casts them; its SwiGLU is a `silu` and a strided product; and each
RMSNorm is about seven elementwise kernels (casts, square, mean, rsqrt, two products).

- `rms_norm`: `DeepseekV3RMSNorm` for rows of any stride, one read and one write.
- `silu_mul`: `silu(gate) * up` of the experts and the plain MLPs, one pass.
- `combine`: the routed experts' weighted sum per token, read straight from the expert-sorted rows
  through the inverse permutation, accumulated in float32 and cast once.

Each computes what the module it replaces computes, in the same order and with the same roundings
(the float32 mean is a sum in a different order; `exp`, `rsqrt` and the divide are libdevice's, the
functions torch's CUDA kernels call; under Triton's interpreter, Triton's own).
`patched(model)` routes transformers' modules through them for the duration of the fast path's
prefill (as `vision_rope.patched` does for the vision tower), for CUDA bf16/fp16 tensors only:
anything else takes the original code, so the plain path and the CPU are untouched.
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
    from triton.language.extra import libdevice

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - CPU-only installs
    HAVE_TRITON = False

#: The experts implementation registered with transformers while `patched` is active.
IMPLEMENTATION = "kimi_prefill"

_HALF = (torch.bfloat16, torch.float16)
#: Under Triton's interpreter (the CPU tests) the kernels run on CPU tensors of any float dtype too.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

if HAVE_TRITON:

    @triton.jit
    def _rsqrt(x, EXACT: tl.constexpr):
        """torch's `rsqrt` (CUDA's `rsqrtf`); the interpreter has no libdevice."""
        if EXACT:
            return libdevice.rsqrt(x)
        return tl.rsqrt(x)

    @triton.jit
    def _silu(g, EXACT: tl.constexpr):
        """torch's `silu`: g / (1 + exp(-g)) with CUDA's `expf` and an IEEE divide."""
        if EXACT:
            return libdevice.div_rn(g, 1.0 + libdevice.exp(-g))
        return g / (1.0 + tl.exp(-g))

    @triton.jit(do_not_specialize=["rows", "stride"])
    def _rms_rows_kernel(x_ptr, w_ptr, out_ptr, rows, stride, eps, N: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_N: tl.constexpr, EXACT: tl.constexpr):
        """out[r] = w * bf16(x[r] * rsqrt(mean(x[r]^2) + eps)), rows `stride` elements apart."""
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
        c = tl.arange(0, BLOCK_N)[None, :]
        mask = (r < rows) & (c < N)
        x = tl.load(x_ptr + r.to(tl.int64) * stride + c, mask=mask, other=0.0).to(tl.float32)
        y = x * _rsqrt(tl.sum(x * x, 1)[:, None] / N + eps, EXACT)
        w = tl.load(w_ptr + c, mask=c < N, other=0.0).to(tl.float32)
        out = w * y.to(out_ptr.dtype.element_ty).to(tl.float32)
        tl.store(out_ptr + r.to(tl.int64) * N + c, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["total", "stride_g", "stride_u"])
    def _silu_mul_kernel(g_ptr, u_ptr, out_ptr, total, stride_g, stride_u, N: tl.constexpr, BLOCK: tl.constexpr,
                         EXACT: tl.constexpr):
        """out = bf16(silu(g)) * u, as `act(gate) * up` rounds it: `total` values, rows of N (inputs
        strided), taken BLOCK at a time across rows so that every program is full."""
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = i < total
        row, col = i // N, i % N
        g = tl.load(g_ptr + row * stride_g + col, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + row * stride_u + col, mask=mask, other=0.0).to(tl.float32)
        s = _silu(g, EXACT).to(out_ptr.dtype.element_ty).to(tl.float32)
        tl.store(out_ptr + i, (s * u).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["tokens"])
    def _combine_kernel(y_ptr, inv_ptr, w_ptr, out_ptr, tokens, N: tl.constexpr, TOP_K: tl.constexpr,
                        BLOCK: tl.constexpr):
        """out[t] = sum_j w[t, j] * y[inv[t * TOP_K + j]] in float32, from j = 0 up, cast once."""
        t = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = c < N
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(TOP_K):
            row = tl.load(inv_ptr + t * TOP_K + j).to(tl.int64)
            w = tl.load(w_ptr + t * TOP_K + j)
            acc += tl.load(y_ptr + row * N + c, mask=mask, other=0.0).to(tl.float32) * w
        tl.store(out_ptr + t * N + c, acc.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, kernel: Any = None) -> torch.Tensor:
    """`DeepseekV3RMSNorm.forward` for `x` [..., N] whose last dimension is contiguous; `kernel` stands in
    for the Triton kernel (`prewarm` records the launch)."""
    kernel = _rms_rows_kernel if kernel is None else kernel
    n = x.shape[-1]
    rows = x.numel() // n
    flat = x if x.dim() == 2 else x.reshape(rows, n)  # a view: only the leading dimensions merge
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    block_r = 4
    kernel[(-(-rows // block_r),)](flat, weight, out, rows, flat.stride(0), eps, N=n, BLOCK_R=block_r,
                                   BLOCK_N=1 << (n - 1).bit_length(), EXACT=not _INTERPRET)
    return out


def silu_mul(gate: torch.Tensor, up: torch.Tensor, kernel: Any = None) -> torch.Tensor:
    """`silu(gate) * up` for 2-D `gate`, `up` [rows, N] with contiguous rows (any row stride)."""
    kernel = _silu_mul_kernel if kernel is None else kernel
    rows, n = gate.shape
    out = torch.empty(rows, n, dtype=gate.dtype, device=gate.device)
    block = 2048
    kernel[(-(-rows * n // block),)](gate, up, out, rows * n, gate.stride(0), up.stride(0), N=n, BLOCK=block,
                                     EXACT=not _INTERPRET)
    return out


def combine(y: torch.Tensor, inv: torch.Tensor, weights: torch.Tensor, kernel: Any = None) -> torch.Tensor:
    """Token t's output: the sum over its k slots of `weights[t, j] * y[inv[t * k + j]]` ([T, N])."""
    kernel = _combine_kernel if kernel is None else kernel
    tokens, k = weights.shape
    n = y.shape[-1]
    out = torch.empty(tokens, n, dtype=y.dtype, device=y.device)
    block = 1024
    kernel[(tokens, -(-n // block))](y, inv, weights, out, tokens, N=n, TOP_K=k, BLOCK=block)
    return out


def _grouped_mm() -> Any:
    import torch.nn.functional as F

    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _is_silu(act: Any) -> bool:
    """Whether an activation module is SiLU (torch's, or transformers' `SiLUActivation` that ACT2FN gives)."""
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def _ours(x: torch.Tensor) -> bool:
    return HAVE_TRITON and ((x.is_cuda and x.dtype in _HALF) or _INTERPRET)


def experts_forward(module: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                    top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' `grouped_mm` experts (the same sort, products and sums) with the SwiGLU and the
    weighted sum as one kernel each; anything it does not cover goes to transformers' own function."""
    from transformers.integrations.moe import grouped_mm_experts_forward

    grouped = _grouped_mm()
    if (grouped is None or not _ours(hidden_states) or module.gate_up_proj.dtype != hidden_states.dtype
            or getattr(module, "has_bias", False) or not getattr(module, "has_gate", True)
            or getattr(module, "is_transposed", False) or not getattr(module, "is_concatenated", True)
            or getattr(module, "has_post_expert_norm", False) or getattr(module, "_is_expert_parallel", False)
            or not _is_silu(getattr(module, "act_fn", None))):
        return grouped_mm_experts_forward(module, hidden_states, top_k_index, top_k_weights)
    k = top_k_index.shape[-1]
    experts = module.num_experts
    flat = top_k_index.reshape(-1)
    # sorted on the narrowest key that holds the expert ids (a radix sort makes a pass per byte); the
    # order within an expert is immaterial, each row of a product being its own
    sorted_ids, perm = torch.sort(flat.to(torch.uint8) if experts <= 256 else flat)
    x = hidden_states[perm // k]
    # histc, not bincount: no host sync (as transformers counts them)
    counts = torch.histc(sorted_ids.int() if flat.is_cuda else sorted_ids.float(), bins=experts, min=0,
                         max=experts - 1)
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    gate_up = grouped(x, module.gate_up_proj.transpose(-2, -1), offs=offsets)
    inter = gate_up.shape[-1] // 2
    act = silu_mul(gate_up[:, :inter], gate_up[:, inter:])
    y = grouped(act, module.down_proj.transpose(-2, -1), offs=offsets)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return combine(y, inv, top_k_weights.float().contiguous())


def _rms_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    w = self.weight
    if (_ours(hidden_states) and w.dtype == hidden_states.dtype and hidden_states.stride(-1) == 1
            and hidden_states.shape[-1] <= 8192):
        return rms_norm(hidden_states, w, float(self.variance_epsilon))
    return _original("DeepseekV3RMSNorm")(self, hidden_states)


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    if _ours(x) and _is_silu(self.act_fn):
        g, u = self.gate_proj(x), self.up_proj(x)
        shape = g.shape
        return self.down_proj(silu_mul(g.reshape(-1, shape[-1]), u.reshape(-1, shape[-1])).view(shape))
    return _original("DeepseekV3MLP")(self, x)


def _targets() -> list[tuple[Any, str, Any]]:
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    return [(ds.DeepseekV3RMSNorm, "forward", _rms_forward), (ds.DeepseekV3MLP, "forward", _mlp_forward)]


_SWAP = Swap(_targets)


def _original(cls: str) -> Any:
    """transformers' own `forward` of DeepseekV3 module class `cls`."""
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    return _SWAP.original(getattr(ds, cls), "forward")


@contextmanager
def patched(language_model: Any) -> Iterator[bool]:
    """Inside the block, `language_model` (a transformers `DeepseekV3Model`) prefills through these
    kernels; the originals are back afterwards (re-entrant). Yields False (patching nothing) without
    Triton."""
    if not HAVE_TRITON:
        yield False
        return
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, experts_forward)
    config = language_model.config
    previous = getattr(config, "_experts_implementation", None)
    # only the bf16 experts dispatch through transformers' interface (quantized ones are our modules)
    swap = previous in (None, "grouped_mm")
    with _SWAP.active():
        if swap:
            config._experts_implementation = IMPLEMENTATION
        try:
            yield True
        finally:
            if swap:
                config._experts_implementation = previous
