"""int8 W8A16: symmetric int8 weights with one float32 scale per output channel (row).

`w[n, k] ~= weight[n, k] * weight_scale[n]`, `weight_scale[n] = max_k |w[n, k]| / 127`. Any GPU (the
kernels widen int8 to bf16 in registers) and the CPU. Relative error per element <= 0.5 / 127 of its
row's largest magnitude.
"""

from __future__ import annotations

from typing import Any

from kimi_cli.model.formats.base import FormatInfo, WeightFormat, leading, prod

QMAX = 127


class Int8(WeightFormat):
    """Per-output-channel int8."""

    info = FormatInfo(name="int8", summary="int8 weights, a float32 scale per output channel (W8A16)",
                      min_capability=None, parts=("weight", "weight_scale"),
                      kernels=("qgemv", "qexperts_up", "qexperts_down"))

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        """1 byte per parameter plus 4 per row."""
        stack, n, k = leading(shape)
        return prod(stack) * n * (k + 4)

    def quantize(self, w: Any) -> dict[str, Any]:
        """Round to the nearest step of each row's scale."""
        import torch

        wf = w.float()
        scale = wf.abs().amax(dim=-1).clamp_min(1e-12) / QMAX
        q = torch.round(wf / scale[..., None]).clamp_(-QMAX, QMAX).to(torch.int8)
        return {"weight": q, "weight_scale": scale}

    def dequantize(self, parts: dict[str, Any], dtype: Any) -> Any:
        """weight * scale[row]."""
        return (parts["weight"].float() * parts["weight_scale"].float()[..., None]).to(dtype)

    def empty(self, shape: tuple[int, ...], device: Any) -> dict[str, Any]:
        """Empty int8 weight and float32 row scales."""
        import torch

        return {"weight": torch.empty(shape, dtype=torch.int8, device=device),
                "weight_scale": torch.empty(shape[:-1], dtype=torch.float32, device=device)}


FORMAT = Int8()
