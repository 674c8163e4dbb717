"""The native vision path (`Kimi_K25` tower + projector) equals an independent reference MoonViT.

The reference (`tests/reference_moonvit.py`) is written from the official semantics on the official
tensor names; the native path is what `load_model` builds. Equality across square, wide, tall,
padded and multi-image inputs checks the loader's renames, the `wqkv` split and rope permutation,
the bicubic resampling of the learned position grid and the 2x2 merge order.

The synthetic weights are N(0, 0.02), which makes attention almost uniform and the position grid
almost invisible; a mistake in the rope or the resampling would then move the output by only ~1e-5.
The fixture therefore scales `wqkv` and the position grid up, so those mistakes move it by >10 %
(`test_comparison_is_sensitive` keeps that true).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from reference_moonvit import ReferenceMoonViT, read_official_tensors, resample_pos_emb
from safetensors.torch import load_file, save_file

from kimi_cli.model.checkpoint import LoadedModel, load_model
from kimi_cli.model.image_processor import preprocess

RTOL = 1e-4  # max |diff| relative to max |reference|; observed ~1e-6 in fp32
QKV_GAIN, POS_GAIN = 15.0, 25.0

#: (width, height) in pixels -> expected (rows, columns) of patches after the processor's padding.
#: The tiny preset's learned position grid is 8x8: these grids are equal, smaller, larger, and mixed.
IMAGES = {
    "square-8x8-identity": ((112, 112), (8, 8)),
    "square-small-padded": ((50, 50), (4, 4)),
    "wide-padded": ((300, 100), (8, 22)),
    "tall-padded": ((90, 250), (18, 8)),
    "odd-size-padded": ((201, 143), (12, 16)),
    "larger-than-pos-grid": ((400, 330), (24, 30)),
}


def sharpen(checkpoint: Path) -> None:
    """Scale `wqkv` and the position grid of every shard in place (see the module docstring)."""
    for shard in sorted(checkpoint.glob("*.safetensors")):
        tensors = load_file(str(shard))
        for name in tensors:
            if name.endswith(".wqkv.weight"):
                tensors[name] = tensors[name] * QKV_GAIN
            elif name == "vision_tower.patch_embed.pos_emb.weight":
                tensors[name] = tensors[name] * POS_GAIN
        save_file(tensors, str(shard), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's tiny checkpoint (official layout), vision weights sharpened."""
    path = Path(shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("vision") / "tiny"))
    sharpen(path)
    return path


@pytest.fixture(scope="module")
def native(checkpoint: Path) -> LoadedModel:
    """The checkpoint loaded through the public loader."""
    return load_model(str(checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> ReferenceMoonViT:
    """The independent reference over the same files."""
    return ReferenceMoonViT.from_checkpoint(checkpoint)


def noise_image(size: tuple[int, int], seed: int) -> Image.Image:
    """A random RGB image of `size` = (width, height)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def processed(native: LoadedModel, sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """pixel_values [sum patches, 3, 14, 14] and grid_hws [N, 2] from the project's processor."""
    out = preprocess([noise_image(s, i) for i, s in enumerate(sizes)], native.processor_config)
    return torch.from_numpy(out.pixel_values), torch.from_numpy(out.grid_hws)


def native_features(native: LoadedModel, pixels: torch.Tensor, grid_hws: torch.Tensor) -> list[torch.Tensor]:
    """Per-image projector outputs of the native model (grid_thw = [1, h, w] per image)."""
    thw = torch.cat([torch.ones(len(grid_hws), 1, dtype=torch.long), grid_hws.long()], dim=1)
    with torch.no_grad():
        return list(native.model.model.get_image_features(pixels, thw).pooler_output)


def relative_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs difference relative to the reference's largest magnitude."""
    assert got.shape == want.shape, (got.shape, want.shape)
    return (got - want).abs().max().item() / want.abs().max().item()


# --- the position grid ------------------------------------------------------------------------


def test_tiny_pos_grid_is_resampled_not_copied(checkpoint: Path) -> None:
    """The preset's grid is 8x8; the test grids need a real bicubic resample, except 8x8 itself."""
    vision = json.loads((checkpoint / "config.json").read_text())["vision_config"]
    assert (vision["init_pos_emb_height"], vision["init_pos_emb_width"]) == (8, 8)
    weight = read_official_tensors(checkpoint, ("vision_tower.patch_embed.pos_emb",))[
        "vision_tower.patch_embed.pos_emb.weight"]
    grids = [grid for _size, grid in IMAGES.values()]
    assert (8, 8) in grids
    assert min(h for h, _ in grids) < 8 < max(h for h, _ in grids)
    assert min(w for _, w in grids) < 8 < max(w for _, w in grids)
    assert torch.allclose(resample_pos_emb(weight, 8, 8), weight.reshape(64, -1), atol=1e-6)
    for h, w in grids:
        if (h, w) == (8, 8):
            continue
        bicubic = resample_pos_emb(weight, h, w)
        assert relative_diff(resample_pos_emb(weight, h, w, mode="bilinear"), bicubic) > 0.05
        if h <= 8 and w <= 8:
            assert relative_diff(weight[:h, :w].reshape(h * w, -1), bicubic) > 0.05


def test_native_pos_emb_equals_interpolate(native: LoadedModel, checkpoint: Path) -> None:
    """The native fused gather equals `F.interpolate(bicubic, align_corners=False)` for every grid."""
    grids = torch.tensor([grid for _size, grid in IMAGES.values()])
    weight = read_official_tensors(checkpoint, ("vision_tower.patch_embed.pos_emb",))[
        "vision_tower.patch_embed.pos_emb.weight"]
    want = torch.cat([resample_pos_emb(weight, h, w) for h, w in grids.tolist()])
    thw = torch.cat([torch.ones(len(grids), 1, dtype=torch.long), grids], dim=1)
    with torch.no_grad():
        got = native.model.model.vision_tower.patch_embed.pos_emb(torch.zeros_like(want), thw)
    assert relative_diff(got, want) < 1e-5


# --- whole tower + projector ------------------------------------------------------------------


@pytest.mark.parametrize("case", list(IMAGES))
def test_single_image_matches_reference(native: LoadedModel, reference: ReferenceMoonViT, case: str) -> None:
    """One image through the processor: native features equal the reference's."""
    size, grid = IMAGES[case]
    pixels, grid_hws = processed(native, [size])
    assert tuple(grid_hws[0].tolist()) == grid
    (got,) = native_features(native, pixels, grid_hws)
    (want,) = reference(pixels, grid_hws)
    assert got.shape == (grid[0] * grid[1] // 4, native.model.config.text_config.hidden_size)
    assert relative_diff(got, want) < RTOL


def test_two_image_batch_matches_reference(native: LoadedModel, reference: ReferenceMoonViT) -> None:
    """Two images in one call: each equals the reference and itself alone (no cross-image attention)."""
    sizes = [IMAGES["wide-padded"][0], IMAGES["odd-size-padded"][0]]
    pixels, grid_hws = processed(native, sizes)
    got = native_features(native, pixels, grid_hws)
    want = reference(pixels, grid_hws)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert relative_diff(g, w) < RTOL
    first = int(grid_hws[0].prod())
    (alone,) = native_features(native, pixels[first:], grid_hws[1:])
    assert relative_diff(got[1], alone) < 1e-5


def test_comparison_is_sensitive(native: LoadedModel, checkpoint: Path) -> None:
    """A reference with the rope axes swapped, or bilinear position resampling, is far off."""
    pixels, grid_hws = processed(native, [IMAGES["odd-size-padded"][0]])
    (got,) = native_features(native, pixels, grid_hws)
    wrong: tuple[dict[str, Any], ...] = ({"rope_swap_axes": True}, {"pos_mode": "bilinear"})
    for knobs in wrong:
        (off,) = ReferenceMoonViT.from_checkpoint(checkpoint, **knobs)(pixels, grid_hws)
        assert relative_diff(got, off) > 100 * RTOL, knobs

