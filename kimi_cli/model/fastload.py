"""Load a checkpoint at disk speed: build the native model empty, then stream every tensor into it.

`from_pretrained` spends most of a load on itself, not on the bytes: it collects each tensor on the
host, runs its conversion ops (merging 64 experts per layer into a new stacked tensor, splitting and
permuting `wqkv`), casts, and copies again. Here the module tree is built on the `meta` device (no
memory, no initialisation) and materialised once, empty, on the target device in the dtypes
`from_pretrained` would give (`_keep_in_fp32_modules_strict`: the router in float32). The shards then
stream past (`model.stream`: large sequential reads into pinned memory, sent to the device
asynchronously) and each tensor is copied straight into its parameter, or into its slice of one (an
expert's row of the fused stack, a third of `wqkv`, permuted for rope on the way) by
`model.names`; a dtype other than the parameter's (a float32 checkpoint loaded as bf16) is converted
by that same copy, on the device. Buffers that are computed, not stored (the rotary `inv_freq`, the
vision tower's temporal table), are computed by transformers' own `_init_weights`, as
`from_pretrained` does.

The checkpoint is untrusted: a tensor of the wrong shape or a non-float dtype, or a weight that no
tensor filled, is one `ModelLoadError`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.names import LAYER, Piece, native_pieces
from kimi_cli.model.phases import PhaseClock

_FUSED_EXPERTS = re.compile(r"\.mlp\.experts\.(gate_up_proj|down_proj)$")
_LM_LAYERS = "model.language_model.layers."
_HINT = "the checkpoint does not match its config.json"


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_empty(config: Any, device: Any, dtype: torch.dtype, layers: Any = None) -> nn.Module:
    """The native model on `device`, every tensor allocated and uninitialised but the computed buffers.

    `layers(text_config)`, when given, builds the language model's decoder layers instead (the
    quantized formats' modules); the bf16 ones are then never allocated.
    """
    from transformers import Kimi_K25ForConditionalGeneration

    for sub in (config, config.text_config, config.vision_config):
        sub.dtype = dtype  # what `from_pretrained` records
    with torch.device("meta"), _default_dtype(dtype):
        model = Kimi_K25ForConditionalGeneration(config)
    _keep_fp32(model, dtype)
    lm = model.model.language_model
    if layers is not None:
        lm.layers = nn.ModuleList()
    model.to_empty(device=device)
    _init_computed_buffers(model)
    if layers is not None:
        lm.layers = layers(lm.config)
    return model


def _keep_fp32(model: nn.Module, dtype: torch.dtype) -> None:
    """What `from_pretrained` keeps in float32 whatever the dtype (DeepSeek-V3's router), on meta."""
    keep = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    if dtype == torch.float16:
        keep |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if not keep or dtype not in (torch.float16, torch.bfloat16):
        return
    pattern = re.compile("|".join(k.replace("*", ".*") for k in sorted(keep)))
    for name, tensor in model.state_dict(keep_vars=True).items():
        if pattern.search(name) and tensor.dtype != torch.float32:
            tensor.data = tensor.data.to(torch.float32)


def _init_computed_buffers(model: nn.Module) -> None:
    """Fill the non-persistent buffers as `from_pretrained` does: transformers' `_init_weights` on each
    module that owns one, its parameters flagged as loaded (as `from_pretrained` flags them) so that
    transformers' init functions leave them to the stream. A buffer left unfilled (a module this
    version of transformers initialises differently) is a bug."""
    stored = set(model.state_dict())
    owners = []
    for prefix, module in model.named_modules():
        computed = [n for n, b in module.named_buffers(recurse=False)
                    if f"{prefix}.{n}".lstrip(".") not in stored and b is not None]
        if computed:
            owners.append((prefix, module, computed))
    with torch.no_grad():
        for _, module, names in owners:
            for n in names:
                getattr(module, n).fill_(float("nan"))
            for p in module.parameters(recurse=False):
                p._is_hf_initialized = True
            model._init_weights(module)
    for prefix, module, names in owners:
        for n in names:
            b = getattr(module, n)
            if b.is_floating_point() and bool(torch.isnan(b).any()):
                raise RuntimeError(f"computed buffer {prefix}.{n} was not initialised")


class Filler:
    """Copies official tensors into the model's tensors, remembering which (parts) it filled."""

    def __init__(self, model: nn.Module, path: Path, skip_prefix: str | None = None) -> None:
        self.targets = {k: v for k, v in model.state_dict().items()
                        if skip_prefix is None or not k.startswith(skip_prefix)}
        self.heads = int(model.config.vision_config.num_attention_heads)
        self.path = path
        self.filled: set[tuple[str, int | None, int | None]] = set()

    def fill(self, official: str, tensor: torch.Tensor) -> None:
        """Copy `official` into place (converting its dtype on the device); unknown names are skipped."""
        for piece in native_pieces(official):
            dest = self.targets.get(piece.target)
            if dest is None:
                continue
            if not tensor.is_floating_point() and dest.is_floating_point():
                raise self._error(official, f"dtype {str(tensor.dtype).removeprefix('torch.')}, "
                                            "expected a floating-point tensor")
            dest = self._slot(official, piece, dest)
            src = self._part(official, piece, tensor, dest.shape)
            if piece.rope:
                rows = dest.shape[0] // self.heads // 2
                dest.view(self.heads, 2, rows, -1).copy_(src.reshape(self.heads, rows, 2, -1).transpose(1, 2))
            else:
                dest.copy_(src)
            self.filled.add((piece.target, piece.expert, piece.half))

    def _slot(self, official: str, piece: Piece, dest: torch.Tensor) -> torch.Tensor:
        if piece.expert is None:
            return dest
        if piece.expert >= dest.shape[0]:
            raise self._error(official, f"expert {piece.expert} does not exist (the config has {dest.shape[0]})")
        dest = dest[piece.expert]
        if piece.half is not None:
            rows = dest.shape[0] // 2
            dest = dest[piece.half * rows:(piece.half + 1) * rows]
        return dest

    def _part(self, official: str, piece: Piece, tensor: torch.Tensor, want: torch.Size) -> torch.Tensor:
        shape = tuple(want)
        if piece.parts > 1:
            shape = (want[0] * piece.parts, *want[1:])
        if tuple(tensor.shape) != shape:
            raise self._error(official, f"shape {tuple(tensor.shape)}, expected {shape}")
        if piece.rope and want[0] % (2 * self.heads):
            raise self._error(official, f"{want[0]} rows do not split into {self.heads} rope heads")
        return tensor.narrow(0, piece.part * want[0], want[0]) if piece.parts > 1 else tensor

    def _error(self, official: str, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path}: cannot load weights ({official[:120]}: {problem})", hint=_HINT)

    def missing(self) -> list[str]:
        """Native names of the tensors (or fused stacks) no official tensor filled completely."""
        out = []
        for name, dest in self.targets.items():
            if _FUSED_EXPERTS.search(name):
                halves = (0, 1) if name.endswith("gate_up_proj") else (None,)
                want = {(name, e, h) for e in range(dest.shape[0]) for h in halves}
                if not want <= self.filled:
                    out.append(name)
            elif (name, None, None) not in self.filled:
                out.append(name)
        return sorted(out)

    def check_complete(self) -> None:
        """The one-line error `from_pretrained`'s loader gave for weights the checkpoint lacks."""
        missing = self.missing()
        if missing:
            raise ModelLoadError(f"{self.path}: {len(missing)} weights missing after mapping (first: {missing[0]})",
                                 hint="the checkpoint is not in the official Kimi-VL tensor layout")


def stream_into(model: nn.Module, path: Path, device: Any, clock: PhaseClock, layer_sink: Any = None) -> None:
    """Stream every tensor of the checkpoint at `path` into `model`, shard after shard in file order.

    `layer_sink(official, tensor)`, when given, takes the decoder layers' tensors (the quantized
    formats fill their own modules) and the rest go through a `Filler`.
    """
    from kimi_cli.model import prefetch
    from kimi_cli.model.stream import stream_shards, weight_map

    prefetch.end(path)  # the read-ahead beside the imports has done its part: the stream reads the rest
    names = weight_map(path)
    shards: dict[str, set[str]] = {}
    for name, shard in names.items():
        shards.setdefault(shard, set()).add(name)
    filler = Filler(model, path, skip_prefix=_LM_LAYERS if layer_sink is not None else None)
    with torch.no_grad():
        for official, tensor in stream_shards([(path / s, shards[s]) for s in sorted(shards)], device):
            clock.bytes_read += tensor.numel() * tensor.element_size()
            if layer_sink is not None and LAYER.match(official):
                layer_sink(official, tensor)
            else:
                filler.fill(official, tensor)
    filler.check_complete()


def finish(model: nn.Module, path: Path) -> nn.Module:
    """What `from_pretrained` does after the weights: tie (a no-op for Kimi-VL: its lm_head is its own
    tensor), the checkpoint's generation config, eval mode."""
    from transformers import GenerationConfig

    model.tie_weights()
    model.config.name_or_path = str(path)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    model.eval()
    return model


def load_streamed(path: Path, config: Any, device: Any, dtype: torch.dtype, clock: PhaseClock,
                  layers: Any = None, fill_layer: Any = None) -> nn.Module:
    """The model from `path` on `device` (module docstring): bf16 (or the checkpoint's float dtype), or
    with `layers(text_config)` building the decoder layers (a quantized format's modules) and
    `fill_layer(layers, official, tensor)` filling them from the decoder layers' tensors."""
    from transformers import Kimi_K25ForConditionalGeneration  # noqa: F401 - importing it is a phase of its own

    clock.lap("import")
    model = build_empty(config, device, dtype, layers=layers)
    clock.lap("build")
    sink = None if fill_layer is None else functools.partial(fill_layer, model.model.language_model.layers)
    stream_into(model, path, device, clock, layer_sink=sink)
    clock.lap("stream")
    finish(model, path)
    clock.lap("post")
    return model
