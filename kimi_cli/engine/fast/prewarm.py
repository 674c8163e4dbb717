"""Compile the fast path's Triton kernels ahead of the first token, from the model's config alone.

The launches are recorded, not written down twice: the decode step (`TritonStep`, or the quantized
step) is built over weights of the model's shapes and dtypes on torch's `meta` device (no memory),
its kernel modules are swapped for recorders, and one `forward` runs; each launch it makes becomes a
`Launch` (kernel, grid, arguments, constexprs, warps). A tensor is recorded as its dtype and byte
offset: Triton specialises a pointer on its dtype and on being 16-byte aligned (allocations are, so
the offset decides), and an int on being 1 or a multiple of 16, and its in-process key holds the
launch options (warps, stages, dependent launch) in the order they were passed, so the keyword
arguments keep the call's order; `JITFunction.warmup` then compiles the very variants the real
launches will look up. A context bucket changes only the attention kernels' trip counts; `plan`
records every bucket asked for and keeps the distinct launches.

`start` compiles in a background thread (the app starts it before the weights load, so the two
overlap) and `wait_pending` is where the engine waits for it before its first launch; compiled
kernels land in Triton's disk cache too (`kernel_cache`), so a later process only loads them.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import import_module
from typing import Any

_PACKAGE = "kimi_cli.engine.fast"


@dataclass(frozen=True)
class TensorSpec:
    """What Triton sees of a tensor argument: its dtype and its byte offset into the allocation."""

    dtype: Any
    offset: int


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the step makes it, tensors reduced to `TensorSpec`s."""

    module: str  # under kimi_cli.engine.fast: triton_kernels, quant_kernels, prefill_kernels, dequant_kernels
    # or vision_rope
    kernel: str
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]

    def variant(self) -> tuple[Any, ...]:
        """At least as fine as Triton's own cache key (the grid is not part of it)."""
        return (self.module, self.kernel, tuple(_spec(a) for a in self.args), self.kwargs)

    def warmup_args(self) -> tuple[list[Any], dict[str, Any]]:
        """What `compile` hands `JITFunction.warmup`: tensors as Triton's mock tensors, and the keyword
        arguments in the order the step passed them."""
        return [_mock(a) for a in self.args], dict(self.kwargs)

    def compile(self) -> None:
        """Compile this launch's variant without running it (a no-op under TRITON_INTERPRET)."""
        fn = getattr(import_module(f"{_PACKAGE}.{self.module}"), self.kernel)
        args, kwargs = self.warmup_args()
        fn.warmup(*args, grid=self.grid, **kwargs)


def _spec(value: Any) -> Any:
    if isinstance(value, TensorSpec):
        return (str(value.dtype), value.offset % 16 == 0)
    if isinstance(value, bool) or not isinstance(value, int):
        return type(value).__name__
    return (value == 1, value % 16 == 0, -(2**31) <= value < 2**31, value >= 2**63)


def _mock(value: Any) -> Any:
    if not isinstance(value, TensorSpec):
        return value
    from triton.runtime.jit import MockTensor

    mock = MockTensor(value.dtype)
    mock.data_ptr = lambda: value.offset  # type: ignore[method-assign]  # alignment, as the real pointer's
    return mock


class Recorder:
    """Stands in for a kernel module: `rec.some_kernel[grid](*args, **kwargs)` appends a `Launch`."""

    def __init__(self, module: str, sink: list[Launch]) -> None:
        self._module, self._sink = module, sink

    def __getattr__(self, name: str) -> Any:
        return _RecordedKernel(self._module, name, self._sink)


class _RecordedKernel:
    def __init__(self, module: str, name: str, sink: list[Launch]) -> None:
        self.module, self.name, self.sink = module, name, sink

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            specs = tuple(_tensor_spec(a) for a in args)
            # in the call's order: Triton's in-process key holds the launch options in the order given
            # (`str` of the options dict), so a sorted replay would miss it and load the kernel again
            kw = tuple((k, _tensor_spec(v)) for k, v in kwargs.items())
            self.sink.append(Launch(self.module, self.name, tuple(grid), specs, kw))
        return launch


def _tensor_spec(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return TensorSpec(value.dtype, value.storage_offset() * value.element_size())
    return value


def record_step(weights: Any, max_len: int, dtype: Any) -> list[Launch]:
    """The launches of one decode step over `weights` (real or `meta_weights`) with `max_len` positions."""
    import torch

    from kimi_cli.engine.fast.cache import LatentCache
    from kimi_cli.engine.fast.step import TritonStep, is_quantized

    device = weights.embed.device
    cache = LatentCache.allocate(len(weights.layers), max_len, weights.kv_lora, weights.rope_dim, device, dtype)
    rope = torch.empty(2, max_len, weights.rope_dim // 2, device=device, dtype=dtype)
    if is_quantized(weights):
        from kimi_cli.engine.fast.quant_step import make_quant_step

        step = make_quant_step(weights, cache, rope)
    else:
        step = TritonStep(weights, cache, rope)
    sink: list[Launch] = []
    step.tk = Recorder("triton_kernels", sink)
    step.qk = Recorder("quant_kernels", sink)
    token = torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode():
        step.forward(token, token, max_len)
    return sink


def record_vision_rope(heads: int, head_dim: int, dtype: Any) -> list[Launch]:
    """The vision tower's rope launches (`vision_rope.fused_rope`: q and k, the same variant)."""
    import torch

    from kimi_cli.engine.fast.vision_rope import _rope_one

    sink: list[Launch] = []
    x = torch.empty(1, 64, heads, head_dim, device="meta", dtype=dtype)
    table = torch.empty(64, head_dim, device="meta", dtype=torch.float32)
    _rope_one(x, table, table, kernel=_RecordedKernel("vision_rope", "_rope_kernel", sink))
    return sink


def record_prefill(text_config: Any, dtype: Any, fmt: str) -> list[Launch]:
    """The prefill's own launches (`prefill_kernels`): the norms of the hidden state and of the latent
    (a strided view of the 576-wide projection), the SwiGLUs of the dense and shared MLPs, and for
    bf16 the routed experts' SwiGLU (halves of one product) and weighted sum."""
    import torch

    from kimi_cli.engine.fast import prefill_kernels as pk

    sink: list[Launch] = []

    def rec(name: str) -> _RecordedKernel:
        return _RecordedKernel("prefill_kernels", name, sink)

    meta = {"device": "meta", "dtype": dtype}
    hidden, lora, rope = text_config.hidden_size, text_config.kv_lora_rank, text_config.qk_rope_head_dim
    pk.rms_norm(torch.empty(1, 16, hidden, **meta), torch.empty(hidden, **meta), 1e-6, kernel=rec("_rms_rows_kernel"))
    latent = torch.empty(1, 16, lora + rope, **meta)[..., :lora]
    pk.rms_norm(latent, torch.empty(lora, **meta), 1e-6, kernel=rec("_rms_rows_kernel"))
    moe = text_config.moe_intermediate_size
    widths = {moe * int(getattr(text_config, "n_shared_experts", 0) or 0)}
    if int(getattr(text_config, "first_k_dense_replace", 0) or 0):
        widths.add(text_config.intermediate_size)
    for width in sorted(w for w in widths if w):
        pk.silu_mul(torch.empty(16, width, **meta), torch.empty(16, width, **meta), kernel=rec("_silu_mul_kernel"))
    if fmt == "bf16":
        gate_up = torch.empty(16, 2 * moe, **meta)
        pk.silu_mul(gate_up[:, :moe], gate_up[:, moe:], kernel=rec("_silu_mul_kernel"))
        k = text_config.num_experts_per_tok
        pk.combine(torch.empty(16 * k, hidden, **meta), torch.empty(16 * k, device="meta", dtype=torch.long),
                   torch.empty(16, k, device="meta", dtype=torch.float32), kernel=rec("_combine_kernel"))
    else:
        _record_dequant(text_config, dtype, fmt, widths, sink)
    return sink


def _record_dequant(text_config: Any, dtype: Any, fmt: str, mlp_widths: set[int], sink: list[Launch]) -> None:
    """A quantized prefill's weight widening (`dequant_kernels`): one variant per format and input width
    (the attention projections', the latent's up-projection, the MLPs' and experts' down products), and
    lm_head's in its own format."""
    from kimi_cli.engine.fast import dequant_kernels as dk
    from kimi_cli.model.formats import get_format, head_format

    c = text_config
    widths = {c.hidden_size, c.kv_lora_rank, c.num_attention_heads * c.v_head_dim, c.moe_intermediate_size,
              *(w for w in mlp_widths if w)}
    if getattr(c, "q_lora_rank", None):
        widths.add(c.q_lora_rank)
    kernel = _RecordedKernel("dequant_kernels", "_dequant_kernel", sink)
    for name, ks in ((fmt, sorted(widths)), (head_format(fmt), [c.hidden_size])):
        f = get_format(name)
        for k in ks:
            dk.dequantize(f, f.empty((128, k), "meta"), dtype, kernel=kernel)


def meta_weights(text_config: Any, dtype: Any, fmt: str) -> Any:
    """`ModelWeights` of the model's shapes and dtypes on the meta device: its dense layers (if any) and
    one MoE layer, built as the loaders build them (`qload.build_layers` for a quantized format)."""
    from types import SimpleNamespace

    import torch
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RotaryEmbedding

    from kimi_cli.engine.fast.weights import extract

    cfg = copy.deepcopy(text_config)
    cfg.num_hidden_layers = int(getattr(cfg, "first_k_dense_replace", 0) or 0) + 1
    hidden, vocab = cfg.hidden_size, cfg.vocab_size
    with torch.device("meta"):
        rotary = DeepseekV3RotaryEmbedding(cfg)
        embed = torch.empty(vocab, hidden, dtype=dtype)
        lm = SimpleNamespace(config=cfg, layers=_meta_layers(cfg, fmt, dtype), rotary_emb=rotary,
                             embed_tokens=SimpleNamespace(weight=embed),
                             norm=SimpleNamespace(weight=torch.empty(hidden, dtype=dtype),
                                                  variance_epsilon=cfg.rms_norm_eps))
        head = _meta_head(vocab, hidden, fmt, dtype)
    return extract(lm, head)


def _meta_head(vocab: int, hidden: int, fmt: str, dtype: Any) -> Any:
    """lm_head on the meta device as the loaders leave it (`qload.quantize_head` for a quantized format)."""
    from types import SimpleNamespace

    import torch

    from kimi_cli.model.formats import get_format, head_format
    from kimi_cli.model.quantized import QuantLinear

    if head_format(fmt) == "bf16":
        return SimpleNamespace(weight=torch.empty(vocab, hidden, dtype=dtype, device="meta"))
    return QuantLinear(get_format(head_format(fmt)), vocab, hidden, "meta")


def _meta_layers(cfg: Any, fmt: str, dtype: Any) -> Any:
    import torch
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer

    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import _set_float_dtypes, build_layers

    if fmt != "bf16":
        return build_layers(cfg, get_format(fmt), "meta", dtype)
    layers = []
    for i in range(cfg.num_hidden_layers):
        with torch.device("meta"):
            layer = DeepseekV3DecoderLayer(cfg, i)
        _set_float_dtypes(layer, dtype)  # the router stays float32, as transformers keeps it
        layers.append(layer)
    return layers


@dataclass(frozen=True)
class ModelShape:
    """What the kernels depend on: the language model's config, dtype, weight format, vision heads."""

    text_config: Any
    dtype: Any
    fmt: str
    vision_heads: int = 0  # 0: no vision rope launches
    vision_head_dim: int = 0


def plan(shape: ModelShape, max_lens: Iterable[int], weights: Any = None) -> list[Launch]:
    """The distinct launches of the decode step at every `max_len` (then the prefill's and the vision
    rope's), over `weights` (default: `meta_weights` of the shape)."""
    from kimi_cli.engine.fast.step import KernelConfig, split_plan

    if weights is None:
        weights = meta_weights(shape.text_config, shape.dtype, shape.fmt)
    # one bucket per distinct kernel variant: recording a step is Python work (tens of ms), and a
    # warm-up runs it beside the weight load
    cfg = KernelConfig()

    def bucket_key(max_len: int) -> tuple[Any, ...]:
        # what of a bucket its launches pass: the split plan's constexprs, and the split count and
        # cache length as Triton specialises ints
        iters, splits, pow2 = split_plan(max_len, cfg)
        return iters, pow2, _spec(splits), _spec(max_len)

    buckets = {bucket_key(n): n for n in sorted(set(max_lens), reverse=True)}
    seen: dict[tuple[Any, ...], Launch] = {}
    for max_len in sorted(buckets.values()):
        for launch in record_step(weights, max_len, shape.dtype):
            seen.setdefault(launch.variant(), launch)
    for launch in record_prefill(shape.text_config, shape.dtype, shape.fmt):
        seen.setdefault(launch.variant(), launch)
    if shape.vision_heads:
        for launch in record_vision_rope(shape.vision_heads, shape.vision_head_dim, shape.dtype):
            seen.setdefault(launch.variant(), launch)
    return list(seen.values())


def compile_all(launches: list[Launch], device_index: int = 0, workers: int = 8) -> None:
    """Compile every launch's variant, `workers` at a time, for the GPU `device_index`."""
    import torch

    def one(launch: Launch) -> None:
        torch.cuda.set_device(device_index)  # Triton compiles for, and caches under, the current device
        launch.compile()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="kimi-compile") as pool:
        for _ in pool.map(one, launches):
            pass


@dataclass(frozen=True)
class WarmResult:
    """What a warm-up did: how many kernel variants, in how long, and whether this was a first run."""

    variants: int
    seconds: float
    first_run: bool


class Warmup:
    """A warm-up job on its own thread; `wait()` returns its result (None if it failed: the JIT remains)."""

    def __init__(self, job: Callable[[], WarmResult]) -> None:
        self._job, self.result, self.error = job, None, None
        self._thread = threading.Thread(target=self._run, name="kimi-warmup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._job()
        except BaseException as exc:  # noqa: BLE001 - the launches then compile on first use, as before
            self.error = exc

    def wait(self) -> WarmResult | None:
        """Block until the job is done."""
        self._thread.join()
        return self.result


_PENDING: list[Warmup] = []
_LOCK = threading.Lock()


def start(job: Callable[[], WarmResult]) -> Warmup:
    """Run `job` in the background; the engine's `wait_pending` waits for it before launching kernels."""
    warm = Warmup(job)
    with _LOCK:
        _PENDING.append(warm)
    return warm


def wait_pending() -> None:
    """Wait for every started warm-up (a launch it is compiling would otherwise compile twice)."""
    with _LOCK:
        pending = list(_PENDING)
        _PENDING.clear()
    for warm in pending:
        warm.wait()


def warm(shape: ModelShape, max_lens: Iterable[int], device_index: int = 0,
         notify: Callable[[str], None] | None = None) -> WarmResult:
    """Plan and compile; say so (through `notify`) when this machine has not compiled them before,
    and mark the cache warm afterwards. The job `start` runs."""
    import torch
    import triton

    from kimi_cli import __version__
    from kimi_cli.engine.fast import kernel_cache as kc
    from kimi_cli.engine.fast.step import triton_supported

    began = time.perf_counter()
    weights = meta_weights(shape.text_config, shape.dtype, shape.fmt)
    if not triton_supported(weights):
        return WarmResult(0, time.perf_counter() - began, False)  # the decoder runs the torch step
    cache = kc.use_kimi_cache()
    key = kc.marker_key(__version__, triton.__version__, torch.cuda.get_device_name(device_index), shape.fmt)
    first = not kc.is_warm(cache, key)
    todo = plan(shape, max_lens, weights)
    if first and notify is not None:
        notify(f"compiling {len(todo)} GPU kernels for this GPU (first run only; `kimi warmup` compiles them ahead)")
    compile_all(todo, device_index)
    kc.mark_warm(cache, key)
    return WarmResult(len(todo), time.perf_counter() - began, first)
