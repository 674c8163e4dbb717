"""int4 W4A16: symmetric 4-bit weights in groups of 128 input columns, two per byte.

`weight` is uint8 `[N, K/2]` (K even): byte `j` of a row holds column `2j` in its low nibble and `2j+1` in
its high nibble, each as `q + 8` with `q` in [-8, 7]. `weight_scale` is float32 `[N, ceil(K/128)]`
(the last group may be partial): `w[n, k] ~= (nibble - 8) * weight_scale[n, k // 128]`, with each group's
largest magnitude mapped to 7. Any GPU and the CPU.
"""

from __future__ import annotations

from typing import Any

from kimi_cli.model.formats.base import FormatInfo, WeightFormat, cdiv, leading, prod

GROUP = 128
QMAX = 7


def pack(q: Any) -> Any:
    """Signed values in [-8, 7] `[..., K]` -> uint8 `[..., ceil(K/2)]` (low nibble = even column)."""
    import torch
    import torch.nn.functional as F

    u = (q.to(torch.int16) + 8).to(torch.uint8)
    if u.shape[-1] % 2:
        u = F.pad(u, (0, 1), value=8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack(packed: Any, k: int) -> Any:
    """uint8 `[..., K/2]` -> int8 values in [-8, 7] `[..., K]`."""
    import torch

    lo = (packed & 0xF).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.stack([lo, hi], dim=-1).flatten(-2)[..., :k]


class Int4(WeightFormat):
    """Group-wise int4, group size 128 along the input dimension."""

    info = FormatInfo(name="int4", summary="int4 weights, a float32 scale per 128 inputs (W4A16)",
                      min_capability=None, parts=("weight", "weight_scale"),
                      kernels=("qgemv", "qexperts_up", "qexperts_down"))

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        """Half a byte per parameter plus 4 per group of 128."""
        stack, n, k = leading(shape)
        return prod(stack) * n * (cdiv(k, 2) + 4 * cdiv(k, GROUP))

    def quantize(self, w: Any) -> dict[str, Any]:
        """Round each group of 128 inputs to 15 levels of its own scale, then pack."""
        import torch
        import torch.nn.functional as F

        *stack, n, k = w.shape
        if k % 2:
            raise ValueError(f"int4 packs two columns a byte; {k} columns is odd")
        groups = cdiv(k, GROUP)
        wf = F.pad(w.float(), (0, groups * GROUP - k)).reshape(*stack, n, groups, GROUP)
        scale = wf.abs().amax(dim=-1).clamp_min(1e-12) / QMAX
        q = torch.round(wf / scale[..., None]).clamp_(-8, QMAX).reshape(*stack, n, groups * GROUP)[..., :k]
        return {"weight": pack(q), "weight_scale": scale}

    def dequantize(self, parts: dict[str, Any], dtype: Any) -> Any:
        """Unpack, then multiply each group by its scale."""
        packed, scale = parts["weight"], parts["weight_scale"].float()
        k = packed.shape[-1] * 2
        q = unpack(packed, k).float()
        s = scale[..., None].expand(*scale.shape, GROUP).flatten(-2)[..., :k]
        return (q * s).to(dtype)

    def empty(self, shape: tuple[int, ...], device: Any) -> dict[str, Any]:
        """Empty packed weight and float32 group scales."""
        import torch

        stack, n, k = leading(shape)
        return {"weight": torch.empty((*stack, n, cdiv(k, 2)), dtype=torch.uint8, device=device),
                "weight_scale": torch.empty((*stack, n, cdiv(k, GROUP)), dtype=torch.float32, device=device)}


FORMAT = Int4()
