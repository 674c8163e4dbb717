"""Modules that hold quantized weights and run the plain transformers forward over them.

`QuantLinear` replaces an `nn.Linear` of the language model; `QuantExperts` replaces
`DeepseekV3Experts` (the fused 3-D routed experts). Both keep the stored tensors of their format (as
buffers named like the checkpoint's parts: `weight`, `weight_scale`, ...) and dequantize right before
each product: the whole matrix for a linear layer, one expert at a time for the experts (so a prefill
never holds a bf16 copy of more than one expert). This is the reference path of every format, on a
CPU or any GPU; the decode step's fast kernels read the same buffers in place.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kimi_cli.model.formats import WeightFormat


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
        return self.fmt.dequantize(self.parts(), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T with W dequantized for this call."""
        return F.linear(x, self.dequantized(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, format={self.fmt.name}"


PROJECTIONS = ("gate", "up", "down")


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

    def parts(self, proj: str, expert: int | None = None) -> dict[str, torch.Tensor]:
        """Stored tensors of one projection (all experts, or one expert's slices)."""
        out = {name: getattr(self, f"{proj}_{name}") for name in self.fmt.info.parts}
        return out if expert is None else {k: v[expert] for k, v in out.items()}

    def expert_weights(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate, up, down) of one expert, dequantized."""
        return tuple(self.fmt.dequantize(self.parts(p, expert), dtype) for p in PROJECTIONS)  # type: ignore[return-value]

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        """Each hit expert's SwiGLU over its tokens, weighted and summed (one expert dequantized at a time)."""
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
