"""Load a checkpoint into quantized modules, tensor by tensor, straight from the safetensors shards.

The bf16 model is never built on the device. The native model is built empty by `model.fastload`
with `QuantLinear`/`QuantExperts` in place of the decoder layers' converted matrices, and filled as
the shards stream past (`model.stream`: large sequential reads into pinned memory, sent to the device
asynchronously): the parts that stay in the checkpoint's dtype (vision tower, projector, embeddings,
final norm, lm_head) through `fastload`'s renames, each decoder-layer tensor copied into place or
quantized there by `fill_tensor`. GPU memory stays
within the quantized weights plus two 256 MiB staging chunks and one bf16 tensor's float32
temporaries; host memory within two pinned chunks.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.formats import WeightFormat, get_format, head_format, is_quantized
from kimi_cli.model.names import LAYER
from kimi_cli.model.phases import PhaseClock
from kimi_cli.model.quantized import QuantExperts, QuantLinear, quantize_linear
from kimi_cli.model.stream import weight_map

_EXPERT = re.compile(r"^mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_SCALE = re.compile(r"^(.+\.)(weight_scale|weight_scale_inv)$")
_LINEARS = ("self_attn.q_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
            "mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj", "mlp.shared_experts.down_proj")


class ShardReader:
    """Memory-mapped reads of single tensors across a checkpoint's shards."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.map = weight_map(path)
        self._stack = ExitStack()
        self._files = {name: self._stack.enter_context(safe_open(str(path / name), framework="pt"))
                       for name in sorted(set(self.map.values()))}

    def __contains__(self, name: str) -> bool:
        return name in self.map

    def get(self, name: str) -> torch.Tensor:
        """One tensor, read from its shard (a CPU copy of just that tensor)."""
        return self._files[self.map[name]].get_tensor(name)

    def close(self) -> None:
        """Close every shard."""
        self._stack.close()


def build_layers(text_config: Any, fmt: WeightFormat, device: Any, dtype: torch.dtype) -> nn.ModuleList:
    """Empty decoder layers on `device`, with quantized modules in place of the converted matrices."""
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer

    layers = []
    for i in range(text_config.num_hidden_layers):
        with torch.device("meta"):
            layer = DeepseekV3DecoderLayer(text_config, i)
        for name in _LINEARS:
            module = layer.get_submodule(name) if _has(layer, name) else None
            if module is not None:
                _replace(layer, name, QuantLinear(fmt, module.out_features, module.in_features, "meta"))
        if hasattr(layer.mlp, "experts"):
            ex = layer.mlp.experts
            layer.mlp.experts = QuantExperts(fmt, ex.num_experts, ex.hidden_dim, ex.intermediate_dim,
                                             ex.act_fn, "meta")
        layer.to_empty(device=device, recurse=True)
        _set_float_dtypes(layer, dtype)
        layers.append(layer)
    return nn.ModuleList(layers)


def quantize_modules(lm: nn.Module, fmt: WeightFormat) -> None:
    """Convert an already loaded `DeepseekV3Model`'s matrices to `fmt`, in place, on their device."""
    with torch.no_grad():
        for layer in lm.layers:
            for name in _LINEARS:
                if _has(layer, name) and isinstance(layer.get_submodule(name), nn.Linear):
                    _replace(layer, name, quantize_linear(layer.get_submodule(name), fmt))
            ex = getattr(layer.mlp, "experts", None)
            if ex is not None and not isinstance(ex, QuantExperts):
                inter, gate_up = ex.intermediate_dim, ex.gate_up_proj
                q = QuantExperts(fmt, ex.num_experts, ex.hidden_dim, inter, ex.act_fn, gate_up.device)
                for proj, w in (("gate", gate_up[:, :inter]), ("up", gate_up[:, inter:]), ("down", ex.down_proj)):
                    _fill(q.parts(proj), fmt.quantize(w))
                layer.mlp.experts = q


def _fill(dest: dict[str, torch.Tensor], src: dict[str, torch.Tensor]) -> None:
    for part, t in src.items():
        dest[part].copy_(t)


def _has(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
    except AttributeError:
        return False
    return True


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent), leaf, new)


def _set_float_dtypes(layer: nn.Module, dtype: torch.dtype) -> None:
    """Norm weights in the model dtype; the router (weight and bias) in float32, as transformers keeps it."""
    for name, p in layer.named_parameters():
        want = torch.float32 if name.startswith("mlp.gate.") else dtype
        if p.dtype != want:
            p.data = p.data.to(want)


def fill_tensor(layers: nn.ModuleList, official: str, tensor: torch.Tensor, fmt: WeightFormat,
                stored: str | None) -> None:
    """Copy one official tensor of a decoder layer (quantizing it when needed) into `layers`."""
    m = LAYER.match(official)
    if m is None or int(m.group(1)) >= len(layers):
        return
    layer, local = layers[int(m.group(1))], m.group(2)
    scale = _SCALE.match(local)
    if scale:  # a stored part beside its weight: `X.weight_scale` of `X.weight`
        _expect_stored(official, fmt, stored)
        _copy_checked(_target(layer, scale.group(1) + "weight")[scale.group(2)], tensor, official)
    elif is_quantized(official):
        target = _target(layer, local)
        if stored is None:
            for part, t in fmt.quantize(tensor.to(next(iter(target.values())).device)).items():
                target[part].copy_(t)
        else:
            _expect_stored(official, fmt, stored)
            _copy_checked(target["weight"], tensor, official)
    else:
        _copy_checked(_plain_target(layer, local), tensor, official)


def _expect_stored(official: str, fmt: WeightFormat, stored: str | None) -> None:
    if stored != fmt.name:
        raise ModelLoadError(f"the checkpoint is quantized as {stored}, not {fmt.name}",
                             hint=f"use --quantize {stored}, or quantize the original checkpoint")


def _copy_checked(dest: torch.Tensor, tensor: torch.Tensor, official: str) -> None:
    if dest.shape != tensor.shape:
        raise ModelLoadError(f"{official}: shape {tuple(tensor.shape)}, expected {tuple(dest.shape)}",
                             hint="the checkpoint does not match its config.json")
    dest.copy_(tensor)


def check_stored_parts(reader_map: dict[str, str], fmt: WeightFormat, stored: str | None) -> None:
    """A `kimi quantize`d checkpoint has every part of every converted matrix (names only)."""
    if stored is None:
        return
    for name in reader_map:
        if is_quantized(name):
            base = name[: -len("weight")]
            missing = [base + part for part in fmt.info.parts if base + part not in reader_map]
            if missing:
                raise ModelLoadError(f"{missing[0]}: missing from the {stored} checkpoint",
                                     hint="re-run `kimi quantize` on the original checkpoint")


def _target(layer: nn.Module, local: str) -> dict[str, torch.Tensor]:
    """Where a converted matrix goes: a QuantLinear's parts or one expert's slices of QuantExperts."""
    m = _EXPERT.match(local)
    if m:
        return layer.mlp.experts.parts(m.group(2), int(m.group(1)))
    return layer.get_submodule(local[: -len(".weight")]).parts()


def _plain_target(layer: nn.Module, local: str) -> torch.Tensor:
    module, _, attr = local.rpartition(".")
    return getattr(layer.get_submodule(module), attr)


def check_layers(names: dict[str, str], n_layers: int, fmt: WeightFormat, stored: str | None) -> None:
    """Every decoder layer has tensors in the checkpoint, and a stored format has all its parts."""
    check_stored_parts(names, fmt, stored)
    present = {int(m.group(1)) for n in names if (m := LAYER.match(n))}
    for i in range(n_layers):
        if i not in present:
            raise ModelLoadError(f"layer {i}: no tensors in the checkpoint",
                                 hint="the checkpoint is not in the official Kimi-VL tensor layout")


def stored_format(quantization_config: dict[str, Any] | None) -> str | None:
    """The format a `kimi quantize`d checkpoint is stored in (None: the original weights)."""
    if not quantization_config:
        return None
    name = quantization_config.get("format")
    if quantization_config.get("quant_method") != "kimi" or name not in ("int8", "fp8", "int4"):
        raise ModelLoadError(f"quantization_config {quantization_config!r} is not one kimi reads",
                             hint="point --model at the original checkpoint or a `kimi quantize` output")
    get_format(name)
    return name


def load_quantized_model(path: Path, checkpoint: Any, tokenizer: Any, device: str, dtype: torch.dtype,
                         attention: str, fmt: WeightFormat, stored: str | None, clock: PhaseClock | None = None) -> Any:
    """The full model with its decoder layers in `fmt` (see the module docstring)."""
    from kimi_cli.model.checkpoint import native_config
    from kimi_cli.model.fastload import load_streamed

    config = native_config(checkpoint, tokenizer, attention)
    check_layers(weight_map(path), config.text_config.num_hidden_layers, fmt, stored)
    model = load_streamed(path, config, device, dtype, clock or PhaseClock(),
                          layers=lambda text: build_layers(text, fmt, device, dtype),
                          fill_layer=lambda layers, name, t: fill_tensor(layers, name, t, fmt, stored))
    quantize_head(model, fmt)
    return model


def quantize_head(model: nn.Module, fmt: WeightFormat) -> None:
    """Swap the model's bf16 lm_head for a `QuantLinear` in `head_format(fmt)` (formats/base.py's
    `HEAD`: every checkpoint keeps it in bf16; it is converted here, a block of rows at a time)."""
    head = get_format(head_format(fmt.name))
    if head.name != "bf16" and not isinstance(model.lm_head, QuantLinear):
        model.lm_head = quantize_linear(model.lm_head, head)
