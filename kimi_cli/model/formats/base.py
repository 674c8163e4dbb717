"""What every weight format provides, and the rule for which tensors a format converts.

A format stores each quantized matrix `[..., N, K]` (leading dims: a stack of experts) as a few tensors
named like the checkpoint's own `X.weight` plus its scales (`X.weight_scale` or, for fp8, DeepSeek-V3's
`X.weight_scale_inv`). Quantize and dequantize are pure tensor functions, the same on a CPU and a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Official tensor names of the language model's matrices that a format converts: attention
#: projections, the dense MLP, routed and shared experts. Everything else stays in the checkpoint's
#: dtype: the vision tower and projector (small, and sensitive), embeddings, norms and the router (its
#: logits choose the experts). lm_head (0.34 B parameters, every logit goes through it) is stored as
#: the checkpoint has it and kept at 8 bits by every quantized format (`HEAD_FORMAT`, see `HEAD`).
QUANTIZED = re.compile(
    r"^language_model\.model\.layers\.\d+\."
    r"(self_attn\.(q_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj))\.weight$"
)


#: lm_head's official name. A quantized format's model holds it in `HEAD_FORMAT` (int8, a scale per
#: row: quantized when loaded, from the bf16 tensor every checkpoint, `kimi quantize`d or not, keeps):
#: at batch 1 it is the largest single read of a decoded token (0.67 GB in bf16), and 8 bits per weight
#: with a scale per vocabulary row keeps each logit's error at int8's rounding (4-bit mixes such as
#: llama.cpp's keep the output matrix at 6 bits or more for the same reason). bf16 keeps it in bf16.
HEAD = "language_model.lm_head.weight"
HEAD_FORMAT = "int8"


def head_format(fmt: str) -> str:
    """The format lm_head is held in when the converted matrices are in `fmt`."""
    return "bf16" if fmt == "bf16" else HEAD_FORMAT


def is_quantized(name: str) -> bool:
    """Whether the official tensor `name` is converted by the non-bf16 formats."""
    return QUANTIZED.match(name) is not None


def cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


@dataclass(frozen=True)
class FormatInfo:
    """The static facts of a format (the planner and `--dry-run` read these)."""

    name: str
    summary: str
    #: Lowest CUDA compute capability the format's kernels need (None: any device).
    min_capability: tuple[int, int] | None
    #: Names of the tensors stored per matrix, the first being `weight`.
    parts: tuple[str, ...]
    #: Fast kernels it has (see kimi_cli/engine/fast/quant_kernels.py); empty: reference path only.
    kernels: tuple[str, ...] = ()

    def applies(self, capability: tuple[int, int] | None) -> str | None:
        """None when the format runs on a device of `capability` (None: CPU), else why not."""
        if self.min_capability is None or capability is None:
            return None
        if capability < self.min_capability:
            want = ".".join(map(str, self.min_capability))
            have = ".".join(map(str, capability))
            return f"{self.name} needs compute capability >= {want} (this GPU has {have})"
        return None


class WeightFormat:
    """Base class: a format's facts plus its pure tensor functions (subclasses override the four)."""

    info: FormatInfo

    @property
    def name(self) -> str:
        """The format's name (`bf16`, `int8`, `fp8`, `int4`)."""
        return self.info.name

    def bytes_for(self, shape: tuple[int, ...]) -> int:
        """Bytes stored for a matrix (or stack of matrices) of `shape`, scales included."""
        raise NotImplementedError

    def quantize(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored tensors of `w` `[..., N, K]`, by part name (`weight`, scales)."""
        raise NotImplementedError

    def dequantize(self, parts: dict[str, Any], dtype: torch.dtype) -> torch.Tensor:
        """The matrix `[..., N, K]` in `dtype`, from the stored tensors."""
        raise NotImplementedError

    def empty(self, shape: tuple[int, ...], device: Any) -> dict[str, torch.Tensor]:
        """Uninitialised stored tensors for a matrix of `shape` (filled by the loader)."""
        raise NotImplementedError


def leading(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, int]:
    """(stack dims, N, K) of a `[..., N, K]` shape."""
    return tuple(shape[:-2]), int(shape[-2]), int(shape[-1])


def prod(dims: tuple[int, ...]) -> int:
    """Product of a tuple of ints (1 for empty)."""
    out = 1
    for d in dims:
        out *= d
    return out
