"""The GPU memory plan: weights in a format + latent KV cache + activation peak, against a budget.

Pure: config dicts and numbers in, a `MemoryPlan` out (torch is not imported). `choose_format` is what
`--quantize auto` runs: bf16 when it fits with room, else fp8 (compute capability >= 8.9) or int8,
else int4; nothing fitting is a one-line `ModelLoadError` (exit 4) with the numbers.

Activation constants are estimates from the model's shapes, scaled by `ACTIVATION_SLACK` so that the
H200 measurement (bf16 weights 30.7 GiB, peak 37.2 GiB on an unchunked 32K-token prefill, i.e. 5.5 GiB
beyond the 1 GiB cache) is covered; prefills run in chunks of `PREFILL_CHUNK` tokens, which bounds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.formats import HEAD, get_format, head_format, is_quantized
from kimi_cli.sizes import GIB

#: Tokens per prefill chunk (the fast and plain decoders split longer prefills).
PREFILL_CHUNK = 4096
#: Margin bf16 must leave free for `--quantize auto` to keep it ("fits with room").
ROOM = 2 * GIB
#: CUDA workspaces (cuBLAS, Triton), captured graphs and allocator slack.
RUNTIME = GIB // 2
ACTIVATION_SLACK = 1.5
#: Preference order of `--quantize auto` after bf16.
AUTO_ORDER = ("fp8", "int8", "int4")


@dataclass(frozen=True)
class Need:
    """What a request needs besides the weights: cached positions and the largest image's patches."""

    context_tokens: int
    image_patches: int = 0


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per item for one format; `budget` is what the GPU (or `--max-gpu-memory`) allows."""

    format: str
    weights: int
    kv_cache: int
    activations: int
    runtime: int
    budget: int | None

    @property
    def total(self) -> int:
        """Everything the process is expected to hold at its peak."""
        return self.weights + self.kv_cache + self.activations + self.runtime

    @property
    def fits(self) -> bool:
        """Whether the total is within the budget (always, without one)."""
        return self.budget is None or self.total <= self.budget

    def lines(self) -> list[str]:
        """The plan as aligned text lines (for `--dry-run`)."""
        rows = [("weights", self.weights), ("KV cache", self.kv_cache), ("activations (peak)", self.activations),
                ("runtime", self.runtime), ("total", self.total)]
        out = [f"memory plan ({self.format}):"] + [f"  {k:<20}{gib(v):>9}" for k, v in rows]
        if self.budget is not None:
            out.append(f"  {'budget':<20}{gib(self.budget):>9}  ({'fits' if self.fits else 'does not fit'})")
        return out


def gib(n: int) -> str:
    """`12.3 GiB`."""
    return f"{n / GIB:.1f} GiB"


def weight_bytes(text: dict[str, Any], vision: dict[str, Any], fmt: str, dtype_bytes: int = 2) -> int:
    """Bytes of every tensor of the checkpoint with the converted ones in `fmt`."""
    from kimi_cli.model.synthetic import tensor_shapes

    f = get_format(fmt)
    total = 0
    for name, shape in tensor_shapes(text, vision):
        if fmt != "bf16" and is_quantized(name):
            total += f.bytes_for(shape)
        elif name == HEAD and fmt != "bf16":
            total += get_format(head_format(fmt)).bytes_for(shape)
        else:
            total += dtype_bytes * _numel(shape)
    return total


def stored_elements(text_or_cfg: Any, fmt: str) -> int:
    """Tensor elements a checkpoint stored in `fmt` holds (int4 packs two values an element)."""
    from kimi_cli.model.synthetic import tensor_shapes

    text, vision = text_or_cfg.text, text_or_cfg.vision
    return sum(_numel(shape) // (2 if fmt == "int4" and is_quantized(name) else 1)
               for name, shape in tensor_shapes(text, vision))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def kv_bytes(text: dict[str, Any], tokens: int, dtype_bytes: int = 2) -> int:
    """The latent MLA cache: per token and layer `kv_lora_rank + qk_rope_head_dim` values (31,104 B full size)."""
    return text["num_hidden_layers"] * (text["kv_lora_rank"] + text["qk_rope_head_dim"]) * dtype_bytes * tokens


def prefill_chunks(n: int, chunk: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of the prefill's chunks over `n` positions: `chunk` (default `PREFILL_CHUNK`)
    at a time, except that a tail under a quarter of a chunk joins the chunk before it.

    Every chunk is an eager forward whose kernel launches cost about as much as a 4K-token chunk's GPU
    work: a 1792x1792 image's 4,096 tokens plus a question must not pay for a second forward over the
    question alone. A chunk is therefore at most 1.25 `chunk` long (`prefill_bytes` counts that).
    """
    size = chunk or PREFILL_CHUNK
    bounds = list(range(0, n, size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < size // 4:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def prefill_bytes(text: dict[str, Any], context: int, dtype_bytes: int = 2) -> int:
    """Activation peak of a (chunked) prefill over `context` positions."""
    chunk = min(context, PREFILL_CHUNK + PREFILL_CHUNK // 4)  # the longest chunk `prefill_chunks` makes
    heads, qk = text["num_attention_heads"], text["qk_nope_head_dim"] + text["qk_rope_head_dim"]
    per_token = 3 * text["intermediate_size"] + 10 * text["hidden_size"] + heads * (2 * qk + text["v_head_dim"])
    # the full keys and values the attention expands from the latent cache, for every cached position
    expanded = heads * (qk + text["v_head_dim"]) * context
    return int(ACTIVATION_SLACK * dtype_bytes * (per_token * chunk + expanded))


def vision_bytes(vision: dict[str, Any], patches: int, dtype_bytes: int = 2) -> int:
    """Activation peak of the vision tower over one image of `patches` patches (SDPA, no L x L matrix)."""
    per_patch = 10 * vision["hidden_size"] + 2 * vision["intermediate_size"]
    return int(ACTIVATION_SLACK * dtype_bytes * per_patch * patches)


def dequant_scratch(text: dict[str, Any], fmt: str) -> int:
    """The reference path's float32 temporaries while dequantizing the largest matrix (dense MLP)."""
    if fmt == "bf16":
        return 0
    return 3 * 4 * text["intermediate_size"] * text["hidden_size"]


def make_plan(text: dict[str, Any], vision: dict[str, Any], fmt: str, need: Need, budget: int | None) -> MemoryPlan:
    """The memory plan of one format for `need` against `budget` bytes."""
    context = min(need.context_tokens, int(text.get("max_position_embeddings", need.context_tokens)))
    act = max(prefill_bytes(text, context), vision_bytes(vision, need.image_patches)) + dequant_scratch(text, fmt)
    return MemoryPlan(format=fmt, weights=weight_bytes(text, vision, fmt), kv_cache=kv_bytes(text, context),
                      activations=act, runtime=RUNTIME, budget=budget)


def candidates(capability: tuple[int, int] | None) -> list[str]:
    """The formats `auto` may pick on this device, in preference order."""
    return ["bf16"] + [f for f in AUTO_ORDER if get_format(f).info.applies(capability) is None]


def choose_format(text: dict[str, Any], vision: dict[str, Any], need: Need, budget: int,
                  capability: tuple[int, int] | None) -> tuple[MemoryPlan, str]:
    """`--quantize auto`: the first format that fits, and one line saying why it was picked."""
    plans = {f: make_plan(text, vision, f, need, budget) for f in candidates(capability)}
    bf16 = plans["bf16"]
    if bf16.total + ROOM <= budget:
        return bf16, f"bf16 fits: {gib(bf16.total)} of {gib(budget)}"
    for name, plan in plans.items():
        if name != "bf16" and plan.fits:
            return plan, (f"{name}: bf16 needs {gib(bf16.total)} of {gib(budget)} "
                          f"(with {gib(ROOM)} to spare); {name} needs {gib(plan.total)}")
    raise nothing_fits(plans, budget, need)


def nothing_fits(plans: dict[str, MemoryPlan], budget: int, need: Need) -> ModelLoadError:
    """The one-line error when no format fits, with the numbers and what would fit."""
    smallest = min(plans.values(), key=lambda p: p.total)
    parts = ", ".join(f"{name} {gib(p.total)}" for name, p in plans.items())
    per_token = smallest.kv_cache // max(need.context_tokens, 1)
    spare = budget - smallest.weights - smallest.activations - smallest.runtime
    tokens = spare // per_token if per_token and spare > 0 else 0
    fit = (f"{smallest.format} fits {tokens} tokens of context in {gib(budget)}" if tokens >= 1024
           else f"{smallest.format} needs at least {gib(smallest.total - smallest.kv_cache)}")
    return ModelLoadError(
        f"no weight format fits {gib(budget)} of GPU memory for {need.context_tokens} tokens of context "
        f"(needs: {parts})",
        hint=f"{fit}: shorten the request (--max-new-tokens, --max-image-tokens), free GPU memory, "
        "or raise --max-gpu-memory",
    )


def check_fits(plan: MemoryPlan, need: Need) -> None:
    """An explicitly chosen format that does not fit is an error before anything is read."""
    if not plan.fits:
        raise ModelLoadError(
            f"{plan.format} needs {gib(plan.total)} of GPU memory (weights {gib(plan.weights)}, KV cache "
            f"{gib(plan.kv_cache)} for {need.context_tokens} tokens, activations {gib(plan.activations)}); "
            f"the budget is {gib(plan.budget or 0)}",
            hint="use --quantize auto, a smaller format, or free GPU memory",
        )
