"""A test-only reference MoonViT + projector, written from the official semantics (facts section 3).

It reads the official tensor names straight out of a checkpoint's safetensors files and computes in
float32 with plain torch ops, without any of transformers' `kimi_k25` code, so that comparing it with
the native path checks the loader's renames, the `wqkv` split and rope permutation, the position
embedding resample and the merger order independently. Deliberately simple, not fast:
attention is a dense softmax per image.

Knobs (`rope_swap_axes`, `pos_mode`) exist only so that tests can show that the comparison is
sensitive to the usual mistakes (height/width swapped in the rope, another resampling filter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

VISION_PREFIX = "vision_tower."
PROJECTOR_PREFIX = "multi_modal_projector."
LN_EPS = 1e-5  # hard-coded in the official MoonViT and projector (facts 1.2, 3.7)
ROPE_THETA = 10000.0  # hard-coded in the official Rope2DPosEmb (facts 3.3)


def read_official_tensors(checkpoint_dir: Path, prefixes: Sequence[str] = ("",)) -> dict[str, torch.Tensor]:
    """Every tensor whose official name starts with one of `prefixes`, as float32, from all shards."""
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(Path(checkpoint_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in list(f.keys()):
                if name.startswith(tuple(prefixes)):
                    out[name] = f.get_tensor(name).float()
    return out


@dataclass(frozen=True)
class VisionShape:
    """The few MoonViT hyper-parameters the math needs, from the official `vision_config`."""

    heads: int
    layers: int
    patch_size: int
    merge: tuple[int, int]

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path) -> VisionShape:
        """Read `vision_config` of the official `config.json`."""
        v = json.loads((Path(checkpoint_dir) / "config.json").read_text())["vision_config"]
        merge = v.get("merge_kernel_size", [2, 2])
        return cls(int(v["num_attention_heads"]), int(v["num_hidden_layers"]), int(v["patch_size"]),
                   (int(merge[0]), int(merge[1])))


def resample_pos_emb(weight: torch.Tensor, h: int, w: int, mode: str = "bicubic") -> torch.Tensor:
    """Learned [H0, W0, C] grid -> [h*w, C], row-major, as `F.interpolate` (align_corners False)."""
    grid = weight.permute(2, 0, 1).unsqueeze(0)
    if mode == "nearest":
        out = F.interpolate(grid, size=(h, w), mode="nearest")
    else:
        out = F.interpolate(grid, size=(h, w), mode=mode, align_corners=False)
    return out[0].permute(1, 2, 0).reshape(h * w, -1)


def rope_factors(h: int, w: int, head_dim: int, swap_axes: bool = False) -> torch.Tensor:
    """Complex factors [h*w, head_dim/2]: slot 2i turns by column x * f_i, slot 2i+1 by row y * f_i."""
    n_freq = head_dim // 4
    freqs = ROPE_THETA ** (-4.0 * torch.arange(n_freq, dtype=torch.float64) / head_dim)
    ys = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    xs = torch.arange(w, dtype=torch.float64).repeat(h)
    if swap_axes:
        xs, ys = ys, xs
    x_angle = xs[:, None] * freqs[None, :]
    y_angle = ys[:, None] * freqs[None, :]
    angles = torch.stack([x_angle, y_angle], dim=-1).reshape(h * w, 2 * n_freq)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate [L, heads, D] by complex pairs (2m, 2m+1) = (real, imag), in fp32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * factors[:, None, :]).flatten(-2).to(x.dtype)


def layer_norm(x: torch.Tensor, t: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """LayerNorm over the last dim with the official `name.weight` / `name.bias`."""
    return F.layer_norm(x, (x.shape[-1],), t[f"{name}.weight"], t[f"{name}.bias"], LN_EPS)


def linear(x: torch.Tensor, t: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """`x @ W.T + b` with the official `name.weight` / `name.bias`."""
    return F.linear(x, t[f"{name}.weight"], t.get(f"{name}.bias"))


class ReferenceMoonViT:
    """MoonViT + Kimi-VL projector over official tensor names; call it like the official tower."""

    def __init__(self, tensors: dict[str, torch.Tensor], shape: VisionShape, *,
                 rope_swap_axes: bool = False, pos_mode: str = "bicubic") -> None:
        self.t = tensors
        self.shape = shape
        self.rope_swap_axes = rope_swap_axes
        self.pos_mode = pos_mode
        self.hidden = tensors["vision_tower.patch_embed.proj.weight"].shape[0]
        self.head_dim = self.hidden // shape.heads

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: Path, **knobs: object) -> ReferenceMoonViT:
        """Read the vision and projector tensors and the vision config of a checkpoint."""
        tensors = read_official_tensors(checkpoint_dir, (VISION_PREFIX, PROJECTOR_PREFIX))
        return cls(tensors, VisionShape.from_checkpoint(checkpoint_dir), **knobs)  # type: ignore[arg-type]

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, grid_hws: torch.Tensor) -> list[torch.Tensor]:
        """Pre-cut patches [sum h*w, 3, p, p] + grids [N, 2] -> per image [h*w/4, text hidden]."""
        grids = [(int(h), int(w)) for h, w in grid_hws.tolist()]
        x = self.embed(pixel_values.float(), grids)
        factors = torch.cat([rope_factors(h, w, self.head_dim, self.rope_swap_axes) for h, w in grids])
        for n in range(self.shape.layers):
            x = self.block(x, grids, factors, f"vision_tower.encoder.blocks.{n}")
        x = layer_norm(x, self.t, "vision_tower.encoder.final_layernorm")
        return [self.project(m) for m in self.merge(x, grids)]

    def embed(self, pixel_values: torch.Tensor, grids: list[tuple[int, int]]) -> torch.Tensor:
        """Conv2d patch embedding of each pre-cut patch plus the resampled learned position grid."""
        p = self.shape.patch_size
        w, b = self.t["vision_tower.patch_embed.proj.weight"], self.t["vision_tower.patch_embed.proj.bias"]
        x = F.conv2d(pixel_values, w, b, stride=p).view(pixel_values.shape[0], -1)
        return x + self.position_embeddings(grids)

    def position_embeddings(self, grids: list[tuple[int, int]]) -> torch.Tensor:
        """The learned [H0, W0, C] grid resampled to every image's (h, w), concatenated."""
        weight = self.t["vision_tower.patch_embed.pos_emb.weight"]
        return torch.cat([resample_pos_emb(weight, h, w, self.pos_mode) for h, w in grids])

    def block(self, x: torch.Tensor, grids: list[tuple[int, int]], factors: torch.Tensor,
              name: str) -> torch.Tensor:
        """One pre-norm encoder layer."""
        x = x + linear(self.attention(layer_norm(x, self.t, f"{name}.norm0"), grids, factors, name),
                       self.t, f"{name}.wo")
        hidden = F.gelu(linear(layer_norm(x, self.t, f"{name}.norm1"), self.t, f"{name}.mlp.fc0"),
                        approximate="tanh")
        return x + linear(hidden, self.t, f"{name}.mlp.fc1")

    def attention(self, x: torch.Tensor, grids: list[tuple[int, int]], factors: torch.Tensor,
                  name: str) -> torch.Tensor:
        """Fused qkv -> (L, 3, heads, head_dim), 2-D rope on q and k, non-causal attention per image."""
        length = x.shape[0]
        qkv = linear(x, self.t, f"{name}.wqkv").view(length, 3, self.shape.heads, self.head_dim)
        q, k, v = qkv.unbind(dim=1)
        q, k = apply_rope(q, factors), apply_rope(k, factors)
        out, start = [], 0
        for h, w in grids:
            sl = slice(start, start + h * w)
            scores = torch.einsum("qhd,khd->hqk", q[sl], k[sl]) / math.sqrt(self.head_dim)
            out.append(torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v[sl]))
            start += h * w
        return torch.cat(out).reshape(length, self.hidden)

    def merge(self, x: torch.Tensor, grids: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Per image: [h*w, C] -> [(h/kh)*(w/kw), kh*kw, C], sub-patches kernel-row outer."""
        kh, kw = self.shape.merge
        out, start = [], 0
        for h, w in grids:
            seq = x[start:start + h * w].view(h // kh, kh, w // kw, kw, self.hidden)
            out.append(seq.permute(0, 2, 1, 3, 4).reshape(-1, kh * kw, self.hidden))
            start += h * w
        return out

    def project(self, merged: torch.Tensor) -> torch.Tensor:
        """Projector: LayerNorm per sub-patch, flatten, linear_1, exact GELU, linear_2."""
        x = layer_norm(merged, self.t, "multi_modal_projector.pre_norm").reshape(merged.shape[0], -1)
        x = F.gelu(linear(x, self.t, "multi_modal_projector.linear_1"))
        return linear(x, self.t, "multi_modal_projector.linear_2")
