"""Tests for kimi_cli.model.image_processor: geometry rules, config file, pixels and patches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.image_processor import (
    CLASS_DEFAULT_MEAN,
    CLASS_DEFAULT_STD,
    MAX_GRID_SIDE,
    ProcessorConfig,
    plan_image,
    preprocess,
)

CFG = ProcessorConfig()


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "resized", "padded", "grid", "tokens"),
    [
        # The worked examples of the facts, section 5 (2506, limit 16384 patches).
        ((1000, 700), (1000, 700), (1008, 700), (50, 72), 900),
        ((4000, 3000), (2073, 1554), (2100, 1568), (112, 150), 4200),
        ((1792, 1792), (1792, 1792), (1792, 1792), (128, 128), 4096),
        ((1920, 1080), (1920, 1080), (1932, 1092), (78, 138), 2691),
        # Degenerate sizes still give a valid grid thanks to padding.
        ((1, 1), (1, 1), (28, 28), (2, 2), 1),
        ((5, 300), (5, 300), (28, 308), (22, 2), 11),
    ],
)
def test_plan_image_worked_examples(
    size: tuple[int, int],
    resized: tuple[int, int],
    padded: tuple[int, int],
    grid: tuple[int, int],
    tokens: int,
) -> None:
    g = plan_image(*size, CFG)
    assert (g.resized, g.padded, g.grid_hw, g.num_tokens) == (resized, padded, grid, tokens)
    assert g.num_patches == grid[0] * grid[1]


def test_plan_image_2504_limit_matches_the_facts() -> None:
    g = plan_image(4000, 3000, ProcessorConfig(in_token_limit=4096))
    assert (g.resized, g.padded, g.grid_hw, g.num_tokens) == ((1036, 777), (1036, 784), (56, 74), 1036)


@pytest.mark.parametrize("size", [(10000, 500), (500, 10000), (1, 100000), (7168, 28), (30000, 30)])
def test_elongated_images_are_shrunk_below_the_rope_grid(size: tuple[int, int]) -> None:
    g = plan_image(*size, CFG)
    assert max(g.grid_hw) < MAX_GRID_SIDE
    assert g.num_patches <= CFG.in_token_limit + 2 * MAX_GRID_SIDE
    w, h = size
    rw, rh = g.resized
    # Aspect is kept up to the integer rounding of the short side.
    assert abs(rw / w - rh / h) <= 1 / h + 1 / w + 1e-9 or min(g.resized) == 1


def test_elongated_10000x500_gets_the_widest_grid_that_fits() -> None:
    g = plan_image(10000, 500, CFG)
    assert g.resized[0] == 7140  # 255 merge units of 28 pixels = 510 patches
    assert g.grid_hw == (26, 510)


@pytest.mark.parametrize("budget", [1, 2, 16, 64, 256, 900, 1000, 4096])
@pytest.mark.parametrize("size", [(1000, 700), (4000, 3000), (1920, 1080), (333, 4444), (10000, 500)])
def test_max_tokens_is_a_hard_cap(size: tuple[int, int], budget: int) -> None:
    g = plan_image(*size, CFG, max_tokens=budget)
    unlimited = plan_image(*size, CFG)
    assert 1 <= g.num_tokens <= min(budget, unlimited.num_tokens)
    assert g.resized[0] <= size[0] and g.resized[1] <= size[1]


def test_max_tokens_tightens_the_official_limit() -> None:
    # 900-token budget = 3600 patches; 1000x700 has 3550 whole patches, so nothing changes.
    assert plan_image(1000, 700, CFG, max_tokens=900) == plan_image(1000, 700, CFG)
    # 256 tokens = 1024 patches: scale sqrt(1024/3550), then shrunk a little more for padding.
    g = plan_image(1000, 700, CFG, max_tokens=256)
    assert g.num_tokens == 247
    assert g.resized == (521, 364)


def test_a_budget_above_the_limit_changes_nothing() -> None:
    assert plan_image(4000, 3000, CFG, max_tokens=100000).num_tokens == 4200


def test_never_upscales() -> None:
    g = plan_image(20, 20, CFG, max_tokens=4096)
    assert g.resized == (20, 20)


@pytest.mark.parametrize(("w", "h", "budget"), [(0, 10, None), (10, 0, None), (10, 10, 0)])
def test_plan_image_rejects_bad_input(w: int, h: int, budget: int | None) -> None:
    with pytest.raises(ValueError):
        plan_image(w, h, CFG, budget)


def test_crop_mode_centre_crops_to_whole_units() -> None:
    g = plan_image(1000, 700, ProcessorConfig(pad_input=False))
    assert g.padded == (980, 700) and g.grid_hw == (50, 70)
    assert plan_image(5, 300, ProcessorConfig(pad_input=False)).padded == (28, 280)


# --- config file ----------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "preprocessor_config.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_from_file_reads_the_official_keys(tmp_path: Path) -> None:
    data = {
        "image_processor_type": "KimiVLImageProcessor",
        "in_token_limit": 4096,
        "pad_input": False,
        "patch_size": 14,
        "merge_kernel_size": [2, 2],
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.5, 1.0],
        "num_pooled_tokens": 1024,
    }
    cfg = ProcessorConfig.from_file(_write(tmp_path, json.dumps(data)))
    assert cfg == ProcessorConfig(in_token_limit=4096, pad_input=False, image_std=(0.25, 0.5, 1.0))
    assert isinstance(cfg.merge_kernel_size, tuple)


def test_from_file_defaults(tmp_path: Path) -> None:
    cfg = ProcessorConfig.from_file(_write(tmp_path, "{}"))
    assert cfg.in_token_limit == 16384 and cfg.pad_input and cfg.patch_size == 14
    assert cfg.image_mean == CLASS_DEFAULT_MEAN and cfg.image_std == CLASS_DEFAULT_STD


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"patch_size": "14"}',
        '{"patch_size": 14.5}',
        '{"in_token_limit": Infinity}',
        '{"merge_kernel_size": [2]}',
        '{"pad_input": "false"}',
        '{"image_std": [0, 1, 1]}',
        '{"image_mean": [0.5, 0.5]}',
        "\xff",
    ],
)
def test_from_file_bad_content_names_the_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ModelLoadError) as info:
        ProcessorConfig.from_file(path)
    assert str(path) in str(info.value)
    assert info.value.exit_code == 4


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="preprocessor_config.json"):
        ProcessorConfig.from_file(tmp_path / "preprocessor_config.json")


# --- pixels ---------------------------------------------------------------------------------


def _gradient(w: int, h: int) -> np.ndarray:
    """A uint8 [h, w, 3] image whose every pixel is unique enough to locate patches."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs + 7 * ys) % 256], axis=-1).astype(np.uint8)


def test_patch_order_and_normalisation_on_a_gradient() -> None:
    cfg = ProcessorConfig(image_mean=(0.1, 0.2, 0.3), image_std=(0.5, 0.25, 2.0))
    raw = _gradient(50, 30)  # no resize; padded to 56x56
    out = preprocess([Image.fromarray(raw)], cfg)
    assert out.pixel_values.dtype == np.float32 and out.pixel_values.shape == (16, 3, 14, 14)
    assert out.grid_hws.dtype == np.int64 and out.grid_hws.tolist() == [[4, 4]]
    canvas = np.zeros((56, 56, 3), dtype=np.float64)
    canvas[:30, :50] = raw / 255.0
    mean, std = np.array(cfg.image_mean), np.array(cfg.image_std)
    expected = (canvas - mean) / std
    for k in range(16):
        row, col = divmod(k, 4)  # row-major over the patch grid
        crop = expected[row * 14 : row * 14 + 14, col * 14 : col * 14 + 14].transpose(2, 0, 1)
        np.testing.assert_allclose(out.pixel_values[k], crop, atol=1e-5)


def test_padding_is_black_after_normalisation() -> None:
    out = preprocess([Image.new("RGB", (1, 1), (255, 255, 255))], CFG)
    patch = out.pixel_values[0]
    assert patch[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert np.all(out.pixel_values[1:] == -1.0)
    assert np.all(patch[:, 1:, :] == -1.0) and np.all(patch[:, :, 1:] == -1.0)


def test_several_images_with_budgets_and_modes() -> None:
    images = [
        Image.new("L", (100, 80), 128),
        Image.new("RGBA", (1000, 700), (0, 0, 255, 255)),
        Image.new("P", (5, 300)),
    ]
    out = preprocess(images, CFG, [None, 64, None])
    assert [g.num_tokens for g in out.geometries] == out.token_counts
    assert out.token_counts[1] <= 64
    assert out.grid_hws.tolist() == [list(g.grid_hw) for g in out.geometries]
    assert out.pixel_values.shape[0] == sum(g.num_patches for g in out.geometries)
    grey = out.pixel_values[0, :, 0, 0]
    np.testing.assert_allclose(grey, (128 / 255 - 0.5) / 0.5, atol=1e-6)
    blue = out.pixel_values[out.geometries[0].num_patches, :, 0, 0]
    np.testing.assert_allclose(blue, [-1.0, -1.0, 1.0], atol=1e-6)


def test_resize_uses_the_planned_size() -> None:
    out = preprocess([Image.new("RGB", (4000, 3000), (10, 20, 30))], CFG)
    assert out.grid_hws.tolist() == [[112, 150]]
    # Inside the resized area (2073x1554) the colour is kept; beyond it is padding.
    last_col = out.pixel_values.reshape(112, 150, 3, 14, 14)[0, 148]
    np.testing.assert_allclose(last_col[:, 0, 0], (np.array([10, 20, 30]) / 255 - 0.5) / 0.5, atol=1e-3)
    assert np.all(out.pixel_values.reshape(112, 150, 3, 14, 14)[0, 149] == -1.0)


def test_no_images() -> None:
    out = preprocess([], CFG)
    assert out.pixel_values.shape == (0, 3, 14, 14) and out.grid_hws.shape == (0, 2)


def test_budget_count_must_match() -> None:
    with pytest.raises(ValueError):
        preprocess([Image.new("RGB", (8, 8))], CFG, [None, None])


def test_large_image_is_fast() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1792, 1792, 3), np.uint8))
    preprocess([image], CFG)  # warm up numpy and the allocator
    start = time.perf_counter()
    out = preprocess([image], CFG)
    assert time.perf_counter() - start < 0.5
    assert out.pixel_values.shape == (16384, 3, 14, 14)


def test_torch_patches_equal_the_numpy_reference() -> None:
    """The engine's on-device normalise + patchify gives the reference's pixels exactly (float32)."""
    import torch

    from kimi_cli.model.image_processor import patchify_canvases, pixel_values_torch, prepare_canvases

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((70, 90), (31, 200))]
    cfg = ProcessorConfig(image_mean=(0.48, 0.45, 0.40), image_std=(0.26, 0.26, 0.27))
    canvases, _ = prepare_canvases(images, cfg, [None, 64])
    ours = pixel_values_torch(canvases, cfg, "cpu", torch.float32).numpy()
    ref = patchify_canvases(canvases, cfg)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ref, preprocess(images, cfg, [None, 64]).pixel_values)
