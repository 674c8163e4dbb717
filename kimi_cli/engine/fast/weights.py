"""Views of a loaded transformers `DeepseekV3Model`'s weights, shaped for batch-1 decode.

A matrix is a tensor (bf16) or a `QMatrix`: the stored parts of a quantized format (model/formats),
read in place by the kernels. The exception is a quantized `kv_b_proj` (2 M parameters a layer), which
is dequantized once here so that its per-head key and value halves can stay strided views.
Nothing else here copies a large tensor: the MLA up-projection is split into its key and value halves as
views of `kv_b_proj.weight`, and the routed experts are read from the fused 3-D parameters in place.
The router weight stays in its stored dtype too: transformers upcasts it to float32 before the product,
which is exact, so a kernel that upcasts while loading computes the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class QMatrix:
    """A quantized matrix (or stack of expert matrices `[E, N, K]`): its format and stored parts."""

    fmt: str
    parts: dict[str, torch.Tensor]
    shape: tuple[int, ...]

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The whole matrix in `dtype` (the reference path)."""
        from kimi_cli.model.formats import get_format

        return get_format(self.fmt).dequantize(self.parts, dtype)

    def select(self, idx: torch.Tensor) -> QMatrix:
        """The experts `idx` of a stack (an index_select of every part: no host sync)."""
        parts = {k: v.index_select(0, idx) for k, v in self.parts.items()}
        return QMatrix(self.fmt, parts, (int(idx.shape[0]), *self.shape[1:]))

    def is_contiguous(self) -> bool:
        """Whether every stored part is contiguous (the kernels index them densely)."""
        return all(t.is_contiguous() for t in self.parts.values())


Matrix = Union["torch.Tensor", QMatrix]


def rows(m: Matrix) -> int:
    """Output rows of a matrix (N of `[..., N, K]`)."""
    return int(m.shape[-2])


def _matrix(module: nn.Module) -> Matrix:
    """A linear layer's weight: the tensor itself, or the QMatrix of a `QuantLinear`."""
    from kimi_cli.model.quantized import QuantLinear

    if isinstance(module, QuantLinear):
        return QMatrix(module.fmt.name, module.parts(), (module.out_features, module.in_features))
    return module.weight


def _expert_matrices(experts: nn.Module) -> tuple[Matrix, Matrix, Matrix | None]:
    """(gate_up or gate, down, up): fused bf16 `[E, 2I, H]` (up None), or three quantized stacks."""
    from kimi_cli.model.quantized import QuantExperts

    if isinstance(experts, QuantExperts):
        e, h, i = experts.num_experts, experts.hidden_dim, experts.intermediate_dim
        name = experts.fmt.name
        return (QMatrix(name, experts.parts("gate"), (e, i, h)), QMatrix(name, experts.parts("down"), (e, h, i)),
                QMatrix(name, experts.parts("up"), (e, i, h)))
    if getattr(experts, "is_transposed", False) or not getattr(experts, "is_concatenated", True):
        raise UnsupportedModel("expert weights are not in the [E, 2I, H] concatenated layout")
    return experts.gate_up_proj, experts.down_proj, None


class UnsupportedModel(ValueError):
    """The model uses a feature the fast decoder does not implement (the plain path still works)."""


@dataclass(frozen=True)
class AttentionWeights:
    """One layer's MLA weights, with `kv_b_proj` split per head into its key and value halves."""

    q_proj: Matrix  # [H * (nope + rope), hidden]
    kv_a: Matrix  # [kv_lora + rope, hidden]
    kv_norm: torch.Tensor  # [kv_lora]
    kv_norm_eps: float
    w_uk: torch.Tensor  # [H, nope, kv_lora], view of kv_b_proj.weight
    w_uv: torch.Tensor  # [H, v, kv_lora], view of kv_b_proj.weight
    o_proj: Matrix  # [hidden, H * v]
    scaling: float


@dataclass(frozen=True)
class DenseWeights:
    """A plain SwiGLU MLP (layer 0 of Kimi-VL)."""

    gate: Matrix
    up: Matrix
    down: Matrix


@dataclass(frozen=True)
class MoEWeights:
    """Router, routed experts (fused 3-D, read in place) and the shared experts of one MoE layer."""

    router: torch.Tensor  # [E, hidden], any float dtype (upcast to float32 when used)
    bias: torch.Tensor  # [E] float32, used for choosing experts only
    gate_up: Matrix  # [E, 2 * I, hidden]: rows [0, I) gate, [I, 2I) up; quantized: gate only [E, I, hidden]
    down: Matrix  # [E, hidden, I]
    shared: DenseWeights
    top_k: int
    n_group: int
    topk_group: int
    norm_topk_prob: bool
    scale: float
    #: Quantized formats keep up apart from gate: [E, I, hidden] (None: fused in gate_up).
    up: Matrix | None = None


@dataclass(frozen=True)
class LayerWeights:
    """One decoder layer."""

    in_norm: torch.Tensor
    post_norm: torch.Tensor
    eps: float
    attn: AttentionWeights
    mlp: DenseWeights | MoEWeights


@dataclass(frozen=True)
class ModelWeights:
    """Everything a decode step reads, plus the rotary frequencies and shapes."""

    embed: torch.Tensor
    layers: tuple[LayerWeights, ...]
    final_norm: torch.Tensor
    final_eps: float
    lm_head: Matrix  # bf16, or `formats.HEAD_FORMAT` in a quantized format's model
    inv_freq: torch.Tensor  # [rope / 2] float32
    rope_scale: float
    num_heads: int
    nope_dim: int
    rope_dim: int
    v_dim: int
    kv_lora: int


def _check_supported(config: object) -> None:
    if getattr(config, "q_lora_rank", None) is not None:
        raise UnsupportedModel("q_lora_rank is set; the fast decoder handles a plain q_proj only")
    if getattr(config, "attention_bias", False):
        raise UnsupportedModel("attention_bias=True is not supported by the fast decoder")
    if not getattr(config, "rope_interleave", True):
        raise UnsupportedModel("rope_interleave=False is not supported by the fast decoder")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise UnsupportedModel("only silu experts are supported by the fast decoder")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UnsupportedModel("only default rope (no YaRN) is supported by the fast decoder")


def _attention(attn: nn.Module, config: object) -> AttentionWeights:
    heads = config.num_attention_heads
    nope, v = config.qk_nope_head_dim, config.v_head_dim
    kv_b = _matrix(attn.kv_b_proj)
    if isinstance(kv_b, QMatrix):  # small: dequantized once so that W_uk / W_uv stay views
        kv_b = kv_b.dequantize(attn.kv_a_layernorm.weight.dtype)
    kv_b = kv_b.view(heads, nope + v, config.kv_lora_rank)
    return AttentionWeights(
        q_proj=_matrix(attn.q_proj),
        kv_a=_matrix(attn.kv_a_proj_with_mqa),
        kv_norm=attn.kv_a_layernorm.weight,
        kv_norm_eps=float(attn.kv_a_layernorm.variance_epsilon),
        w_uk=kv_b[:, :nope, :],
        w_uv=kv_b[:, nope:, :],
        o_proj=_matrix(attn.o_proj),
        scaling=float(attn.scaling),
    )


def _dense(mlp: nn.Module) -> DenseWeights:
    return DenseWeights(gate=_matrix(mlp.gate_proj), up=_matrix(mlp.up_proj), down=_matrix(mlp.down_proj))


def _moe(mlp: nn.Module) -> MoEWeights:
    gate = mlp.gate
    gate_up, down, up = _expert_matrices(mlp.experts)
    return MoEWeights(
        router=gate.weight,
        bias=gate.e_score_correction_bias,
        gate_up=gate_up,
        down=down,
        up=up,
        shared=_dense(mlp.shared_experts),
        top_k=int(gate.top_k),
        n_group=int(gate.num_group),
        topk_group=int(gate.topk_group),
        norm_topk_prob=bool(gate.norm_topk_prob),
        scale=float(gate.routed_scaling_factor),
    )


def extract(language_model: nn.Module, lm_head: nn.Module) -> ModelWeights:
    """Collect views of `language_model`'s (a `DeepseekV3Model`) and `lm_head`'s weights."""
    config = language_model.config
    _check_supported(config)
    layers = []
    for layer in language_model.layers[: config.num_hidden_layers]:
        mlp = layer.mlp
        layers.append(
            LayerWeights(
                in_norm=layer.input_layernorm.weight,
                post_norm=layer.post_attention_layernorm.weight,
                eps=float(layer.input_layernorm.variance_epsilon),
                attn=_attention(layer.self_attn, config),
                mlp=_moe(mlp) if hasattr(mlp, "experts") else _dense(mlp),
            )
        )
    rotary = language_model.rotary_emb
    return ModelWeights(
        embed=language_model.embed_tokens.weight,
        layers=tuple(layers),
        final_norm=language_model.norm.weight,
        final_eps=float(language_model.norm.variance_epsilon),
        lm_head=_matrix(lm_head),
        inv_freq=rotary.inv_freq.detach().float(),
        rope_scale=float(rotary.attention_scaling),
        num_heads=config.num_attention_heads,
        nope_dim=config.qk_nope_head_dim,
        rope_dim=config.qk_rope_head_dim,
        v_dim=config.v_head_dim,
        kv_lora=config.kv_lora_rank,
    )
