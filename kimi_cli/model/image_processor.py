"""Kimi-VL image preprocessing: resize plan, padding, normalisation and patchify (numpy, no torch).

The geometry follows the official `KimiVLImageProcessor` (facts section 5): images whose
floor(w/14)*floor(h/14) patches exceed `in_token_limit` are scaled down by sqrt(limit/patches),
then padded right/bottom to multiples of 28 pixels. Two deliberate departures, both only where the
official code would fail or overshoot:

* a side that would reach 512 patches (the vision rope table) is shrunk instead of raising
  "Exceed pos emb";
* a caller's per-image `max_tokens` budget is a hard cap on the image's LLM tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from kimi_cli.errors import ModelLoadError
from kimi_cli.textsafe import json_loads

if TYPE_CHECKING:  # numpy loads only where pixels are made: a remote client plans sizes without it
    import numpy as np

#: The 2506 checkpoint's limit (16384 patches = 4096 LLM tokens per image).
DEFAULT_IN_TOKEN_LIMIT = 16384
#: MoonViT's 2D rope table is 512x512 patches; a grid side must stay below it.
MAX_GRID_SIDE = 512
#: Values in the 2506 hub `preprocessor_config.json` (facts section 5, [L]).
HUB_MEAN_STD = (0.5, 0.5, 0.5)
#: The official class defaults (OpenAI CLIP), used when a config file omits mean/std.
CLASS_DEFAULT_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLASS_DEFAULT_STD = (0.26862954, 0.26130258, 0.27577711)

Size = tuple[int, int]


@dataclass(frozen=True)
class ProcessorConfig:
    """The image processor settings of a checkpoint (`preprocessor_config.json`)."""

    patch_size: int = 14
    merge_kernel_size: tuple[int, int] = (2, 2)
    in_token_limit: int = DEFAULT_IN_TOKEN_LIMIT
    pad_input: bool = True
    image_mean: tuple[float, float, float] = HUB_MEAN_STD
    image_std: tuple[float, float, float] = HUB_MEAN_STD
    num_pooled_tokens: int = 1024  # carried by the file, unused by the official code

    def __post_init__(self) -> None:
        if self.patch_size < 1 or min(self.merge_kernel_size) < 1 or self.in_token_limit < 1:
            raise ValueError(f"invalid image processor settings: {self}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or 0.0 in self.image_std:
            raise ValueError("image_mean and image_std need three values, std non-zero")

    @classmethod
    def from_file(cls, path: Path) -> ProcessorConfig:
        """Read a checkpoint's `preprocessor_config.json`; bad files raise `ModelLoadError`."""
        try:
            data = json_loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} does not hold a JSON object")
        try:
            return cls._from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} has invalid image processor settings: {exc}") from exc

    @classmethod
    def _from_dict(cls, data: dict[str, object]) -> ProcessorConfig:
        merge = data.get("merge_kernel_size", (2, 2))
        if not isinstance(merge, (list, tuple)) or len(merge) != 2:
            raise TypeError(f"merge_kernel_size must be two integers, got {merge!r}")
        pad_input = data.get("pad_input", True)
        if not isinstance(pad_input, bool):
            raise TypeError(f"pad_input must be true or false, got {pad_input!r}")
        return cls(
            patch_size=_as_int(data.get("patch_size", 14)),
            merge_kernel_size=(_as_int(merge[0]), _as_int(merge[1])),
            # The 2506 value; a file without the key is most likely a 2506 export that dropped it.
            in_token_limit=_as_int(data.get("in_token_limit", DEFAULT_IN_TOKEN_LIMIT)),
            pad_input=pad_input,
            # Missing mean/std: do what the official class does, i.e. use its CLIP defaults.
            image_mean=_as_triple(data.get("image_mean", CLASS_DEFAULT_MEAN)),
            image_std=_as_triple(data.get("image_std", CLASS_DEFAULT_STD)),
            num_pooled_tokens=_as_int(data.get("num_pooled_tokens", 1024)),
        )

    @property
    def unit(self) -> Size:
        """The padding unit in pixels, (width, height): patch size times the merge kernel."""
        return self.patch_size * self.merge_kernel_size[1], self.patch_size * self.merge_kernel_size[0]


def processor_config_for(model: str | None) -> ProcessorConfig:
    """The one source of a checkpoint's image-processing config for planning and for the run.

    The checkpoint's own `preprocessor_config.json` (a local directory, or the hub cache, read
    without network access and without loading the model): the same file `load_model` reads, so
    `--dry-run` and the run agree. 2506's values when the file is not on disk yet or is bad
    (the model load reports a bad file properly).
    """
    from kimi_cli.model.checkpoint import checkpoint_file

    path = checkpoint_file(model, "preprocessor_config.json")
    if path is not None:
        try:
            return ProcessorConfig.from_file(path)
        except ModelLoadError:
            pass
    return ProcessorConfig()


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():  # also rejects inf and nan
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _as_triple(value: object) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):  # transformers also accepts one value for all channels
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise TypeError(f"expected three numbers, got {value!r}")
    a, b, c = (float(v) for v in value)
    return a, b, c


@dataclass(frozen=True)
class ImageGeometry:
    """How one image is resized and padded, and the patch grid it yields."""

    original: Size  # (w, h) as given
    resized: Size  # (w, h) after the (down)scale; equal to `original` when not resized
    padded: Size  # (w, h) of the final canvas (cropped instead when pad_input is false)
    grid_hw: Size  # (rows, columns) of 14-pixel patches
    merge_area: int = 4  # patches per LLM token
    #: The config this was planned with: preprocessing reuses the geometry only under the same one.
    config: ProcessorConfig | None = field(default=None, compare=False, repr=False)

    @property
    def num_patches(self) -> int:
        """Patches the vision tower sees."""
        return self.grid_hw[0] * self.grid_hw[1]

    @property
    def num_tokens(self) -> int:
        """LLM tokens (`<|media_pad|>` placeholders) the image costs."""
        return self.num_patches // self.merge_area


def plan_image(width: int, height: int, cfg: ProcessorConfig, max_tokens: int | None = None) -> ImageGeometry:
    """Plan the resize and padding of a `width` x `height` image (pure arithmetic).

    `max_tokens` is a per-image budget: it tightens the patch limit to `max_tokens` times the merge
    area (4 patches per token), and the result never costs more than `max_tokens` LLM tokens.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image has no pixels ({width}x{height})")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    merge_area = cfg.merge_kernel_size[0] * cfg.merge_kernel_size[1]
    limit = cfg.in_token_limit
    if max_tokens is not None:
        limit = min(limit, max_tokens * merge_area)
    p = cfg.patch_size
    patches = (width // p) * (height // p)
    scale = math.sqrt(limit / patches) if patches > limit else 1.0

    def geometry(s: float) -> ImageGeometry:
        resized = (width, height) if s >= 1.0 else (max(1, int(width * s)), max(1, int(height * s)))
        canvas = _canvas(resized, cfg)
        grid = (canvas[1] // p, canvas[0] // p)
        return ImageGeometry((width, height), resized, canvas, grid, merge_area, cfg)

    def fits(g: ImageGeometry) -> bool:
        if max(g.grid_hw) >= MAX_GRID_SIDE:
            return False
        return max_tokens is None or g.num_tokens <= max_tokens

    return _largest_fitting(geometry, fits, scale)


def _canvas(resized: Size, cfg: ProcessorConfig) -> Size:
    unit_w, unit_h = cfg.unit
    w, h = resized
    if cfg.pad_input:
        return math.ceil(w / unit_w) * unit_w, math.ceil(h / unit_h) * unit_h
    # The official code centre-crops to whole units instead; a side under one unit is padded.
    return max(unit_w, w // unit_w * unit_w), max(unit_h, h // unit_h * unit_h)


def _largest_fitting(
    geometry: Callable[[float], ImageGeometry],
    fits: Callable[[ImageGeometry], bool],
    scale: float,
) -> ImageGeometry:
    """The geometry at `scale`, or at the largest smaller scale that fits.

    The grid only grows with the scale, so a bisection finds the largest fitting one; a scale of
    0 gives 1x1 pixels, which always fits.
    """
    best = geometry(scale)
    if fits(best):
        return best
    lo, hi = 0.0, scale
    best = geometry(lo)
    for _ in range(64):
        mid = (lo + hi) / 2
        candidate = geometry(mid)
        if fits(candidate):
            lo, best = mid, candidate
        else:
            hi = mid
    return best


@dataclass(frozen=True, eq=False)
class ProcessedImages:
    """Model-ready pixels of several images, concatenated in order."""

    pixel_values: np.ndarray  # float32 [sum of patches, 3, patch, patch]
    grid_hws: np.ndarray  # int64 [N, 2] = (rows, columns) of patches per image
    geometries: tuple[ImageGeometry, ...]

    @property
    def token_counts(self) -> list[int]:
        """LLM tokens per image, in order."""
        return [g.num_tokens for g in self.geometries]


def prepare_canvases(
    images: Sequence[Image.Image],
    cfg: ProcessorConfig,
    max_tokens: Sequence[int | None] | None = None,
    planned: Sequence[ImageGeometry | None] | None = None,
) -> tuple[list[np.ndarray], list[ImageGeometry]]:
    """Resize and pad each image (with its optional token budget) to a uint8 [H, W, 3] canvas.

    `planned` geometries (the planner's, one per image or None) are used as they are when they
    were planned for this image's size under this `cfg`: the planner decides once, and the
    engine does not decide again. The canvases are what the model sees before normalisation:
    4x smaller than float pixels, so they travel to the GPU cheaply and hash quickly (cache
    keys); see `pixel_values_torch`.
    """
    import numpy as np

    budgets: Sequence[int | None] = [None] * len(images) if max_tokens is None else max_tokens
    plans: Sequence[ImageGeometry | None] = [None] * len(images) if planned is None else planned
    if len(budgets) != len(images) or len(plans) != len(images):
        raise ValueError(f"{len(budgets)} token budgets and {len(plans)} plans for {len(images)} images")
    canvases: list[np.ndarray] = []
    geometries: list[ImageGeometry] = []
    for image, budget, plan in zip(images, budgets, plans, strict=True):
        geometry = plan if _applies(plan, image, cfg) else plan_image(image.width, image.height, cfg, budget)
        assert geometry is not None
        canvases.append(np.asarray(_fit_canvas(image, geometry), dtype=np.uint8))
        geometries.append(geometry)
    return canvases, geometries


def _applies(plan: ImageGeometry | None, image: Image.Image, cfg: ProcessorConfig) -> bool:
    return plan is not None and plan.config == cfg and plan.original == image.size


def preprocess(
    images: Sequence[Image.Image],
    cfg: ProcessorConfig,
    max_tokens: Sequence[int | None] | None = None,
) -> ProcessedImages:
    """Resize, pad, normalise and patchify `images` (each with its optional token budget), in numpy."""
    canvases, geometries = prepare_canvases(images, cfg, max_tokens)
    return ProcessedImages(patchify_canvases(canvases, cfg), grid_array(geometries), tuple(geometries))


def grid_array(geometries: Sequence[ImageGeometry]) -> np.ndarray:
    """[N, 2] int64 (h, w) patch grids, the `image_grid_hws` of the official processor."""
    import numpy as np

    return np.array([g.grid_hw for g in geometries], dtype=np.int64).reshape(-1, 2)


def patchify_canvases(canvases: Sequence[np.ndarray], cfg: ProcessorConfig) -> np.ndarray:
    """Normalised float32 patches [sum patches, 3, p, p] of uint8 canvases (numpy reference path)."""
    import numpy as np

    p = cfg.patch_size
    arrays = [_patchify(_normalise(canvas, cfg), p) for canvas in canvases]
    return np.concatenate(arrays) if arrays else np.zeros((0, 3, p, p), dtype=np.float32)


def pixel_values_torch(canvases: Sequence[np.ndarray], cfg: ProcessorConfig, device: object,
                       dtype: object) -> object:
    """The same patches as `patchify_canvases`, computed on `device` (uint8 upload, then one fused op)."""
    import torch

    p = cfg.patch_size
    mean = torch.tensor(cfg.image_mean, device=device, dtype=torch.float32)
    scale = 1.0 / (255.0 * torch.tensor(cfg.image_std, device=device, dtype=torch.float32))
    out = []
    for canvas in canvases:
        h, w, c = canvas.shape
        x = _uint8_tensor(canvas).to(device, non_blocking=True).float()  # uploaded as uint8: 4x fewer bytes
        x = x * scale - mean * (scale * 255.0)
        x = x.view(h // p, p, w // p, p, c).permute(0, 2, 4, 1, 3).reshape(-1, c, p, p)
        out.append(x.to(dtype))
    if not out:
        return torch.zeros((0, 3, p, p), device=device, dtype=dtype)
    return torch.cat(out)


def _uint8_tensor(canvas: np.ndarray) -> object:
    """The canvas as a CPU uint8 tensor, sharing its memory when it can.

    PIL-backed arrays are read-only; torch warns about wrapping one (a write through the tensor would
    be undefined). Nothing writes to this tensor (it is read once, by the copy to the device), so a
    read-only canvas is wrapped as it is rather than copied (9.6 MB for a 1792x1792 image)."""
    import warnings

    import numpy as np
    import torch

    if canvas.dtype != np.uint8 or not canvas.flags.c_contiguous:
        return torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.uint8))
    if canvas.flags.writeable:
        return torch.from_numpy(canvas)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(canvas)


def _fit_canvas(image: Image.Image, geometry: ImageGeometry) -> Image.Image:
    # RGB first: PIL resizes palette and bilevel images with nearest-neighbour only. (An RGB image is
    # used as it is: `convert` would copy it, and nothing below writes to it.)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != geometry.resized:
        image = image.resize(geometry.resized, Image.Resampling.BICUBIC)
    (rw, rh), (cw, ch) = geometry.resized, geometry.padded
    # Padding is at the right/bottom; cropping (pad_input false) keeps the centre. PIL fills
    # the part of a crop box outside the image with zeros, i.e. black, which is the padding.
    left = max(0, round((rw - cw) / 2))
    top = max(0, round((rh - ch) / 2))
    if (left, top, cw, ch) == (0, 0, rw, rh):
        return image
    return image.crop((left, top, left + cw, top + ch))


def _normalise(canvas: np.ndarray, cfg: ProcessorConfig) -> np.ndarray:
    """[H, W, 3] uint8 -> float32 ((x / 255) - mean) / std, fused into one multiply-add."""
    import numpy as np

    std = np.asarray(cfg.image_std, dtype=np.float32)
    mean = np.asarray(cfg.image_mean, dtype=np.float32)
    pixels = canvas.astype(np.float32)  # a fresh array, so in-place is safe
    pixels *= 1.0 / (255.0 * std)
    pixels -= mean / std
    return pixels


def _patchify(pixels: np.ndarray, p: int) -> np.ndarray:
    """[H, W, 3] -> [H/p * W/p, 3, p, p], patches in row-major order."""
    import numpy as np

    h, w, c = pixels.shape
    grid = pixels.reshape(h // p, p, w // p, p, c).transpose(0, 2, 4, 1, 3)
    return np.ascontiguousarray(grid.reshape(-1, c, p, p), dtype=np.float32)
