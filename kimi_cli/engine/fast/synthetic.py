"""Random-weight `DeepseekV3ForCausalLM` models with Kimi-VL's language-model shapes, built on any device.

For tests ("tiny": a few layers, float32, CPU-sized) and benchmarks ("full": the real 27-layer shapes;
decode speed does not depend on the weights' values).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KIMI_VL_TEXT: dict[str, Any] = {
    "vocab_size": 163840,
    "hidden_size": 2048,
    "intermediate_size": 11264,
    "moe_intermediate_size": 1408,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_shared_experts": 2,
    "n_routed_experts": 64,
    "num_experts_per_tok": 6,
    "routed_scaling_factor": 2.446,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "n_group": 1,
    "topk_group": 1,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "max_position_embeddings": 131072,
    "rope_parameters": {"rope_type": "default", "rope_theta": 800000.0},
    "rms_norm_eps": 1e-5,
    "num_mtp_layers": 0,
    "tie_word_embeddings": False,
    "bos_token_id": 163584,
    "eos_token_id": 163585,
    "pad_token_id": 163839,
}

TINY_TEXT: dict[str, Any] = {
    **KIMI_VL_TEXT,
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "n_routed_experts": 8,
    "num_experts_per_tok": 3,
    "kv_lora_rank": 64,
    "qk_rope_head_dim": 16,
    "v_head_dim": 32,
    "qk_nope_head_dim": 32,
    "max_position_embeddings": 4096,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def text_config(preset: str = "tiny", **overrides: Any) -> Any:
    """A `DeepseekV3Config` for `preset` ("tiny" or "full") with `overrides` applied."""
    from transformers import DeepseekV3Config

    base = {"tiny": TINY_TEXT, "full": KIMI_VL_TEXT}[preset]
    return DeepseekV3Config(**{**base, **overrides})


def _perturb(model: nn.Module, std: float, generator: torch.Generator | None) -> None:
    """Give every weight a visible random value (norm weights near 1, router bias nonzero)."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator, device=p.device, dtype=torch.float32)
        if "norm" in name:
            p.data.copy_(1.0 + 0.1 * noise)
        else:
            p.data.copy_(std * noise)
    for name, b in model.named_buffers():
        if name.endswith("e_score_correction_bias"):
            b.data = 0.1 * torch.randn(b.shape, generator=generator, device=b.device, dtype=torch.float32)


def build_model(
    preset: str = "tiny",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    std: float | None = None,
    **overrides: Any,
) -> nn.Module:
    """A random-weight `DeepseekV3ForCausalLM` in eval mode; the router bias stays float32 as when loaded."""
    from transformers import DeepseekV3ForCausalLM

    config = text_config(preset, **overrides)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = DeepseekV3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        _perturb(model, std if std is not None else config.hidden_size**-0.5, generator)
    return model.eval()
