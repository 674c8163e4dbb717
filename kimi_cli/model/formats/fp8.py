"""fp8: float8 e4m3 weights with 128x128 block scales, in DeepSeek-V3's own FP8 checkpoint layout.

`weight` is `float8_e4m3fn` `[N, K]`; `weight_scale_inv` is float32 `[ceil(N/128), ceil(K/128)]` and is
what the weight is *multiplied* by (DeepSeek's name: the inverse of the quantization scale):
`w[n, k] ~= weight[n, k] * weight_scale_inv[n // 128, k // 128]`, with each block's largest magnitude
mapped to 448 (e4m3's largest finite value). Edge blocks are partial. The kernels need compute
capability >= 8.9 (native e4m3 conversion); the reference path runs anywhere torch has the dtype.
"""

from __future__ import annotations

from typing import Any

from kimi_cli.model.formats.base import FormatInfo, WeightFormat, cdiv, leading, prod

BLOCK = 128
FP8_MAX = 448.0


def _expand(scale: Any, n: int, k: int) -> Any:
    """Block scales `[..., ceil(N/B), ceil(K/B)]` -> per element `[..., N, K]` (views and one copy: no
    data-dependent sizes, so it can be captured in a CUDA graph)."""
    *stack, nb, kb = scale.shape
    full = scale[..., :, None, :, None].expand(*stack, nb, BLOCK, kb, BLOCK).reshape(*stack, nb * BLOCK, kb * BLOCK)
    return full[..., :n, :k]


class Fp8(WeightFormat):
    """e4m3 with 128x128 block scales."""

    info = FormatInfo(name="fp8", summary="float8 e4m3, 128x128 block scales (DeepSeek-V3 layout)",
                      min_capability=(8, 9), parts=("weight", "weight_scale_inv"),
                      kernels=("qgemv", "qexperts_up", "qexperts_down"))

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        """1 byte per parameter plus 4 per 128x128 block."""
        stack, n, k = leading(shape)
        return prod(stack) * (n * k + 4 * cdiv(n, BLOCK) * cdiv(k, BLOCK))

    def quantize(self, w: Any) -> dict[str, Any]:
        """Scale each block so that its largest magnitude is 448, then round to e4m3."""
        import torch
        import torch.nn.functional as F

        *stack, n, k = w.shape
        nb, kb = cdiv(n, BLOCK), cdiv(k, BLOCK)
        wf = F.pad(w.float(), (0, kb * BLOCK - k, 0, nb * BLOCK - n))
        blocks = wf.reshape(*stack, nb, BLOCK, kb, BLOCK)
        scale = blocks.abs().amax(dim=(-3, -1)).clamp_min(1e-12) / FP8_MAX
        q = (w.float() / _expand(scale, n, k)).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return {"weight": q, "weight_scale_inv": scale}

    def dequantize(self, parts: dict[str, Any], dtype: Any) -> Any:
        """weight * weight_scale_inv[block]."""
        q = parts["weight"]
        n, k = q.shape[-2:]
        return (q.float() * _expand(parts["weight_scale_inv"].float(), n, k)).to(dtype)

    def empty(self, shape: tuple[int, ...], device: Any) -> dict[str, Any]:
        """Empty e4m3 weight and float32 block scales."""
        import torch

        stack, n, k = leading(shape)
        return {"weight": torch.empty(shape, dtype=torch.float8_e4m3fn, device=device),
                "weight_scale_inv": torch.empty((*stack, cdiv(n, BLOCK), cdiv(k, BLOCK)),
                                                dtype=torch.float32, device=device)}


FORMAT = Fp8()
