"""bf16: the checkpoint as published (no conversion); the baseline every format is measured against."""

from __future__ import annotations

from typing import Any

from kimi_cli.model.formats.base import FormatInfo, WeightFormat, leading, prod


class Bf16(WeightFormat):
    """Weights kept as bfloat16 (or the checkpoint's float dtype on a CPU)."""

    info = FormatInfo(name="bf16", summary="bfloat16, as published (2 bytes per parameter)",
                      min_capability=None, parts=("weight",),
                      kernels=("gemv2", "experts_up", "experts_down"))

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        """2 bytes per parameter."""
        stack, n, k = leading(shape)
        return 2 * prod(stack) * n * k

    def quantize(self, w: Any) -> dict[str, Any]:
        """The weight in bfloat16."""
        import torch

        return {"weight": w.to(torch.bfloat16)}

    def dequantize(self, parts: dict[str, Any], dtype: Any) -> Any:
        """The weight in `dtype`."""
        return parts["weight"].to(dtype)

    def empty(self, shape: tuple[int, ...], device: Any) -> dict[str, Any]:
        """An empty bfloat16 weight."""
        import torch

        return {"weight": torch.empty(shape, dtype=torch.bfloat16, device=device)}


FORMAT = Bf16()
