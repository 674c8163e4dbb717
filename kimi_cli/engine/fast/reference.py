"""Pure-torch decode operations for one token: the CPU path and the reference for the Triton kernels.

Each function mirrors the numerics of the transformers module it replaces (casts included), except that
attention is computed in the absorbed form over the latent cache. Everything here is CUDA-graph
capturable: no host syncs and no shapes that depend on data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kimi_cli.engine.fast.weights import AttentionWeights, DenseWeights, Matrix, MoEWeights, QMatrix


def linear(x: torch.Tensor, w: Matrix) -> torch.Tensor:
    """x @ W.T for a bf16 matrix, or a quantized one dequantized for this product (a large one a block
    of rows at a time: `model.quantized.dequantized_linear`)."""
    if not isinstance(w, QMatrix):
        return F.linear(x, w)
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.quantized import dequantized_linear

    return dequantized_linear(x, get_format(w.fmt), w.parts)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`DeepseekV3RMSNorm`: normalise in float32, cast back, then scale."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rope_table(inv_freq: torch.Tensor, scale: float, max_len: int, dtype: torch.dtype) -> torch.Tensor:
    """cos and sin per position and frequency, `[2, max_len, rope / 2]`, rounded to `dtype` as transformers does."""
    pos = torch.arange(max_len, device=inv_freq.device, dtype=torch.float32)
    freqs = pos[:, None] * inv_freq[None, :].float()
    return torch.stack([freqs.cos() * scale, freqs.sin() * scale]).to(dtype)


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """DeepSeek's interleaved rotary: pairs (x0, x1), (x2, x3) ... rotate; output is [evens', odds']."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def write_latent(
    h: torch.Tensor,
    aw: AttentionWeights,
    cache_c: torch.Tensor,
    cache_k: torch.Tensor,
    pos: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> None:
    """Project `h` [1, hidden] to the latent, normalise and rope it, and store it at `pos` (a device [1])."""
    kv_lora = cache_c.shape[-1]
    ckv = linear(h, aw.kv_a)
    c = rms_norm(ckv[:, :kv_lora], aw.kv_norm, aw.kv_norm_eps)
    k_pe = rope_interleaved(ckv[:, kv_lora:], cos, sin)
    cache_c.index_copy_(0, pos, c)
    cache_k.index_copy_(0, pos, k_pe)


def absorbed_query(
    h: torch.Tensor, aw: AttentionWeights, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries in latent space: `q_nope @ W_uk` [H, kv_lora] and the roped `q_pe` [H, rope]."""
    heads, nope, _ = aw.w_uk.shape
    q = linear(h, aw.q_proj).view(heads, -1)
    q_pe = rope_interleaved(q[:, nope:], cos, sin)
    q_lat = torch.bmm(q[:, :nope].unsqueeze(1), aw.w_uk).squeeze(1)
    return q_lat, q_pe


def latent_attention(
    q_lat: torch.Tensor,
    q_pe: torch.Tensor,
    cache_c: torch.Tensor,
    cache_k: torch.Tensor,
    pos: torch.Tensor,
    length: int,
    scaling: float,
) -> torch.Tensor:
    """Attend over the first `length` cached positions, masking those after `pos`; returns [H, kv_lora]."""
    c, k = cache_c[:length], cache_k[:length]
    scores = (q_lat @ c.T + q_pe @ k.T).float() * scaling
    live = torch.arange(length, device=pos.device) <= pos
    scores = scores.masked_fill(~live, float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(c.dtype)
    return probs @ c


def attention_output(o_lat: torch.Tensor, aw: AttentionWeights) -> torch.Tensor:
    """Project the latent attention output through W_uv per head, then `o_proj`; returns [1, hidden]."""
    o = torch.bmm(o_lat.unsqueeze(1), aw.w_uv.transpose(1, 2))
    return linear(o.reshape(1, -1), aw.o_proj)


def dense_mlp(h: torch.Tensor, dw: DenseWeights) -> torch.Tensor:
    """SwiGLU MLP, `DeepseekV3MLP`."""
    return linear(F.silu(linear(h, dw.gate)) * linear(h, dw.up), dw.down)


def route(h: torch.Tensor, mw: MoEWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """`DeepseekV3TopkRouter` for one token: (weights float32 [k], expert ids int64 [k])."""
    scores = F.linear(h.float(), mw.router.float()).sigmoid().view(-1)
    choice = scores + mw.bias.float()
    experts = choice.shape[-1]
    if mw.n_group > 1:
        groups = choice.view(mw.n_group, experts // mw.n_group)
        group_scores = groups.topk(2, dim=-1)[0].sum(dim=-1)
        keep = torch.zeros_like(group_scores).scatter_(0, group_scores.topk(mw.topk_group)[1], 1.0)
        mask = keep[:, None].expand_as(groups).reshape(-1).bool()
        choice = choice.masked_fill(~mask, float("-inf"))
    idx = torch.topk(choice, k=mw.top_k, sorted=False)[1]
    weights = scores.gather(0, idx)
    if mw.norm_topk_prob:
        weights = weights / (weights.sum() + 1e-20)
    return weights * mw.scale, idx


def experts_gather(h: torch.Tensor, mw: MoEWeights, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Routed experts for one token by gathering the chosen experts' weights: [1, hidden].

    Copies the chosen slices (fine on a CPU and as a reference); the Triton kernels read them in place.
    """
    inter = mw.down.shape[-1]
    hs = h.view(1, -1, 1).expand(idx.shape[0], -1, -1)
    if mw.up is not None:  # quantized: dequantize the chosen experts only
        gate = torch.bmm(_chosen(mw.gate_up, idx, h.dtype), hs)
        act = F.silu(gate) * torch.bmm(_chosen(mw.up, idx, h.dtype), hs)
        out = torch.bmm(_chosen(mw.down, idx, h.dtype), act).squeeze(-1)
        return (out * weights[:, None]).sum(0, keepdim=True).to(h.dtype)
    gate_up = torch.bmm(mw.gate_up.index_select(0, idx), hs)
    act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    out = torch.bmm(mw.down.index_select(0, idx), act).squeeze(-1)
    return (out * weights[:, None]).sum(0, keepdim=True).to(h.dtype)


def _chosen(m: Matrix, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The experts `idx` of a stack, dequantized when quantized."""
    return m.select(idx).dequantize(dtype) if isinstance(m, QMatrix) else m.index_select(0, idx)


def moe(h: torch.Tensor, mw: MoEWeights) -> torch.Tensor:
    """`DeepseekV3MoE` for one token: routed experts plus shared experts."""
    weights, idx = route(h, mw)
    return experts_gather(h, mw, weights, idx) + dense_mlp(h, mw.shared)
