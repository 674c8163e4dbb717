"""Modules that hold quantized weights and run the plain transformers forward over them.

`QuantLinear` replaces an `nn.Linear` of the language model; `QuantExperts` replaces
`DeepseekV3Experts` (the fused 3-D routed experts). Both keep the stored tensors of their format (as
buffers named like the checkpoint's parts: `weight`, `weight_scale`, ...) and dequantize right before
each product: the whole matrix for a linear layer; for the experts, a few at a time in a prefill
(grouped products over the tokens sorted by expert) or only the hit ones while decoding, so a bf16
copy of every expert never exists. This is the reference path of every format, on a
CPU or any GPU; the decode step's fast kernels read the same buffers in place.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kimi_cli.model.formats import WeightFormat


def dequantize(fmt: WeightFormat, parts: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """`fmt.dequantize(parts, dtype)`: where every module here widens its stored weights. The fast
    path's prefill puts a one-pass GPU kernel in its place for its duration (the same values:
    `engine/fast/dequant_kernels.py`); called through the module, so that the swap reaches every call."""
    return fmt.dequantize(parts, dtype)


class QuantLinear(nn.Module):
    """A bias-free linear layer whose weight is stored in a quantized format."""

    def __init__(self, fmt: WeightFormat, out_features: int, in_features: int, device: Any) -> None:
        super().__init__()
        self.fmt = fmt
        self.in_features, self.out_features = in_features, out_features
        for name, t in fmt.empty((out_features, in_features), device).items():
            self.register_buffer(name, t)

    def parts(self) -> dict[str, torch.Tensor]:
        """The stored tensors, by part name."""
        return {name: getattr(self, name) for name in self.fmt.info.parts}

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight `[out, in]` in `dtype`."""
        return dequantize(self.fmt, self.parts(), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T with W dequantized for this call (`dequantized_linear`)."""
        return dequantized_linear(x, self.fmt, self.parts())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, format={self.fmt.name}"


#: Weights a large `QuantLinear` dequantizes at once (16 Mi: 64 MiB of float32 temporaries).
ROWS_AT_ONCE = 1 << 24


def dequantized_linear(x: torch.Tensor, fmt: WeightFormat, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """x @ W.T for W `[N, K]` stored as `parts` in `fmt`, dequantized for this product: whole, or
    `ROWS_AT_ONCE` weights' worth of rows at a time when every part is per row and W is larger (lm_head:
    0.34 B weights, whose float32 dequantization would otherwise be a 1.3 GB temporary)."""
    n, k = parts["weight"].shape[0], x.shape[-1]
    step = max(1, ROWS_AT_ONCE // k)
    if n <= step or any(t.shape[0] != n for t in parts.values()):
        return F.linear(x, dequantize(fmt, parts, x.dtype))
    return torch.cat([F.linear(x, dequantize(fmt, {name: t[lo:lo + step] for name, t in parts.items()}, x.dtype))
                      for lo in range(0, n, step)], dim=-1)


def quantize_linear(linear: nn.Module, fmt: WeightFormat) -> QuantLinear:
    """A `QuantLinear` in `fmt` of a bias-free `nn.Linear`'s weight, on its device: quantized whole, or
    `ROWS_AT_ONCE` weights' worth of rows at a time when every part is per row and the matrix is larger
    (bounded temporaries, the same values: each row's quantization depends on that row alone)."""
    w = linear.weight
    n, k = w.shape
    out = QuantLinear(fmt, n, k, w.device)
    parts = out.parts()
    step = n if any(t.shape[0] != n for t in parts.values()) else max(1, ROWS_AT_ONCE // k)
    with torch.no_grad():
        for lo in range(0, n, step):
            for name, t in fmt.quantize(w[lo:lo + step]).items():
                parts[name][lo:lo + step].copy_(t)
    return out


PROJECTIONS = ("gate", "up", "down")
#: Experts dequantized together in a grouped prefill (bounds its bf16 temporaries: 8 experts of
#: Kimi-VL are 0.14 GB of bf16 per projection).
GROUP = 8
#: torch's grouped matrix product (torch >= 2.10; `torch._grouped_mm` before), or None.
_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


class QuantExperts(nn.Module):
    """Routed experts as three quantized stacks: gate and up `[E, I, H]`, down `[E, H, I]`.

    Same call as `DeepseekV3Experts`: (hidden [T, H], top_k_index [T, k], top_k_weights [T, k]).
    """

    def __init__(self, fmt: WeightFormat, experts: int, hidden: int, inter: int, act: Any, device: Any) -> None:
        super().__init__()
        self.fmt, self.num_experts, self.hidden_dim, self.intermediate_dim = fmt, experts, hidden, inter
        self.act_fn = act
        shapes = {"gate": (experts, inter, hidden), "up": (experts, inter, hidden), "down": (experts, hidden, inter)}
        for proj, shape in shapes.items():
            for name, t in fmt.empty(shape, device).items():
                self.register_buffer(f"{proj}_{name}", t)

    def parts(self, proj: str, expert: int | slice | None = None) -> dict[str, torch.Tensor]:
        """Stored tensors of one projection (all experts, one expert's slices, or a run of experts)."""
        out = {name: getattr(self, f"{proj}_{name}") for name in self.fmt.info.parts}
        return out if expert is None else {k: v[expert] for k, v in out.items()}

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate, up, down) of one expert, dequantized."""
        return tuple(dequantize(self.fmt, self.parts(p, expert), dtype) for p in PROJECTIONS)  # type: ignore[return-value]

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        """Each hit expert's SwiGLU over its tokens, weighted and summed.

        A prefill (at least as many token-expert pairs as experts) runs grouped: experts
        `GROUP` at a time are dequantized together and multiplied with `grouped_mm` over their tokens,
        sorted by expert. Fewer pairs (decode, short prompts) dequantize only the hit experts, one at a
        time. Both compute the same sums.
        """
        if _GROUPED_MM is not None and top_k_index.numel() >= self.num_experts:
            return self._grouped(hidden_states, top_k_index, top_k_weights)
        return self._each_hit(hidden_states, top_k_index, top_k_weights)

    def _slices(self, proj: str, lo: int, hi: int, dtype: torch.dtype) -> torch.Tensor:
        """Experts [lo, hi) of one projection, dequantized: `[hi - lo, N, K]`."""
        return dequantize(self.fmt, self.parts(proj, slice(lo, hi)), dtype)

    def _grouped(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> torch.Tensor:
        k = top_k_index.shape[-1]
        flat = top_k_index.reshape(-1)
        order = flat.argsort(stable=True)
        token = order // k
        ends = torch.bincount(flat, minlength=self.num_experts).cumsum(0)
        bounds = [0, *ends.tolist()]  # one host read per layer
        x = hidden_states[token]
        y = torch.empty_like(x)
        for lo in range(0, self.num_experts, GROUP):
            hi = min(lo + GROUP, self.num_experts)
            a, b = bounds[lo], bounds[hi]
            if a == b:
                continue
            offs = (ends[lo:hi] - a).to(torch.int32)
            xs = x[a:b]
            gate, up, down = (self._slices(p, lo, hi, x.dtype) for p in PROJECTIONS)
            act = self.act_fn(_GROUPED_MM(xs, gate.transpose(1, 2), offs=offs)) * _GROUPED_MM(
                xs, up.transpose(1, 2), offs=offs)
            y[a:b] = _GROUPED_MM(act, down.transpose(1, 2), offs=offs)
        y = (y * top_k_weights.reshape(-1)[order, None]).to(hidden_states.dtype)  # weighted as `_each_hit`
        # back in (token, slot) order and summed over the slots: deterministic, unlike a CUDA
        # `index_add_` (atomic adds in a varying order), so two prefills of one prompt agree bit for bit
        pairs = torch.empty_like(y)
        pairs[order] = y
        return pairs.view(-1, k, y.shape[-1]).sum(1)

    def _each_hit(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                  top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        hit = torch.unique(top_k_index).tolist()
        for e in hit:
            token, slot = torch.where(top_k_index == e)
            gate, up, down = self.expert_weights(e, hidden_states.dtype)
            x = hidden_states[token]
            y = F.linear(self.act_fn(F.linear(x, gate)) * F.linear(x, up), down)
            y = y * top_k_weights[token, slot, None]
            out.index_add_(0, token, y.to(out.dtype))
        return out


def quantized_bytes(model: nn.Module) -> int:
    """Bytes held by the quantized modules' stored tensors."""
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear | QuantExperts):
            total += sum(b.numel() * b.element_size() for b in module.buffers(recurse=False))
    return total
