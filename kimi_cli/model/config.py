"""Read the official Kimi-VL `config.json` and map it onto transformers' native `kimi_k25` config.

The official file says `model_type: "kimi_vl"` with a `moonvit` vision config and a `deepseek_v3`
text config; transformers 5.23 has no `kimi_vl` class, but `Kimi_K25Config` (MoonViT tower +
projector + `deepseek_v3` language model) computes the same network for still images
(facts section 10). This module is pure: JSON in, config values out; torch is not imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_cli.errors import ModelLoadError
from kimi_cli.model.facts import FIRST_SPECIAL_ID, MEDIA_PAD, NAMED_SPECIAL_OFFSETS
from kimi_cli.model.validate import check_config_values, check_int, check_size
from kimi_cli.textsafe import json_loads

#: `deepseek_v3` text-config keys transformers understands; everything else in the official
#: text_config (topk_method, scoring_func, moe_layer_freq, aux_loss_alpha, seq_aux, ...) is either
#: training-only or checked below and then dropped.
_TEXT_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "n_shared_experts", "n_routed_experts",
    "routed_scaling_factor", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim",
    "qk_nope_head_dim", "n_group", "topk_group", "num_experts_per_tok", "first_k_dense_replace",
    "norm_topk_prob", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias", "attention_dropout",
)


@dataclass(frozen=True)
class CheckpointConfig:
    """The parts of an official Kimi-VL `config.json` the loader needs, already validated."""

    text: dict[str, Any]
    vision: dict[str, Any]
    media_placeholder_token_id: int
    path: Path
    #: `quantization_config` of a `kimi quantize`d checkpoint (None: the original weights).
    quantization: dict[str, Any] | None = None

    @property
    def image_token_id(self) -> int:
        """The id of `<|media_pad|>`, which image features replace."""
        return self.media_placeholder_token_id


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object from a checkpoint file, or fail with a one-line `ModelLoadError`."""
    try:
        data = json_loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path}: missing", hint="a Kimi-VL checkpoint directory holds config.json, "
            "*.safetensors, tiktoken.model, tokenizer_config.json and preprocessor_config.json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})", hint="re-download the model") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object", hint="re-download the model")
    return data


def read_checkpoint_config(model_dir: Path) -> CheckpointConfig:
    """Parse and check `model_dir/config.json` (official Kimi-VL layout)."""
    path = model_dir / "config.json"
    raw = read_json(path)
    model_type = raw.get("model_type")
    if model_type != "kimi_vl":
        raise ModelLoadError(
            f"{path}: model_type is {model_type!r}, expected 'kimi_vl'",
            hint="point --model at a Kimi-VL checkpoint such as moonshotai/Kimi-VL-A3B-Thinking-2506",
        )
    text, vision = raw.get("text_config"), raw.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise ModelLoadError(f"{path}: text_config or vision_config missing", hint="re-download the model")
    _check_supported(path, text)
    check_config_values(path, text, vision)
    media = raw.get("media_placeholder_token_id", FIRST_SPECIAL_ID + NAMED_SPECIAL_OFFSETS[MEDIA_PAD])
    check_int(path, "media_placeholder_token_id", media, 0, text["vocab_size"] - 1)
    quant = raw.get("quantization_config")
    cfg = CheckpointConfig(text=text, vision=vision, media_placeholder_token_id=media, path=path,
                           quantization=quant if isinstance(quant, dict) else None)
    check_size(path, estimate_parameters(cfg))
    return cfg


def _check_supported(path: Path, text: dict[str, Any]) -> None:
    """Refuse text configs whose routing the native DeepseekV3 classes would compute differently."""
    checks = {
        "topk_method": ("noaux_tc", text.get("topk_method", "noaux_tc")),
        "scoring_func": ("sigmoid", text.get("scoring_func", "sigmoid")),
        "moe_layer_freq": (1, text.get("moe_layer_freq", 1)),
    }
    for key, (want, got) in checks.items():
        if got != want:
            raise ModelLoadError(
                f"{path}: text_config.{key} is {got!r}; only {want!r} is supported natively",
                hint="this checkpoint is not a Kimi-VL-A3B variant kimi can map",
            )


def text_config_dict(cfg: CheckpointConfig) -> dict[str, Any]:
    """The `deepseek_v3` config dict for transformers, from the official text_config."""
    out = {k: cfg.text[k] for k in _TEXT_KEYS if k in cfg.text}
    out["model_type"] = "deepseek_v3"
    out["tie_word_embeddings"] = False
    # Multi-token-prediction heads are not in the checkpoint; transformers defaults to 1.
    out["num_nextn_predict_layers"] = int(cfg.text.get("num_nextn_predict_layers", 0) or 0)
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": float(cfg.text.get("rope_theta", 800000.0))}
    scaling = cfg.text.get("rope_scaling")
    if scaling:
        rope.update(scaling)
        rope["rope_type"] = scaling.get("type", scaling.get("rope_type", "default"))
    out["rope_parameters"] = rope
    # Keep the interleaved (DeepSeek) rope layout: it is how the weights were trained.
    out["rope_interleave"] = True
    return out


def vision_config_dict(cfg: CheckpointConfig) -> dict[str, Any]:
    """The `kimi_k25_vision` config dict, from the official `moonvit` vision_config."""
    v = cfg.vision
    merge = v.get("merge_kernel_size", [2, 2])
    return {
        "patch_size": int(v.get("patch_size", 14)),
        "pos_emb_height": int(v.get("init_pos_emb_height", 64)),
        "pos_emb_width": int(v.get("init_pos_emb_width", 64)),
        "num_attention_heads": int(v.get("num_attention_heads", 16)),
        "num_hidden_layers": int(v.get("num_hidden_layers", 27)),
        "hidden_size": int(v.get("hidden_size", 1152)),
        "intermediate_size": int(v.get("intermediate_size", 4304)),
        # Hard-coded in the official MoonViT code (facts 1.2): tanh GELU, rope theta 10000.
        "hidden_act": "gelu_pytorch_tanh",
        "merge_kernel_size": [int(merge[0]), int(merge[1])],
        "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
    }


def native_config_kwargs(cfg: CheckpointConfig, media_ids: dict[str, int]) -> dict[str, Any]:
    """Keyword arguments for `transformers.Kimi_K25Config` equivalent to the official config.

    `media_ids` holds the tokenizer's ids for `<|media_start|>` and `<|media_end|>` (read from the
    checkpoint's tokenizer_config.json rather than assumed).
    """
    vision = vision_config_dict(cfg)
    text = text_config_dict(cfg)
    return {
        "text_config": text,
        "vision_config": vision,
        "projection_hidden_size": vision["hidden_size"],
        "projection_layer_norm_eps": 1e-5,
        "image_token_id": cfg.media_placeholder_token_id,
        "vision_start_token_id": media_ids["media_start"],
        "vision_end_token_id": media_ids["media_end"],
        # Kimi-VL has no video tokens; an id equal to the vocabulary size never matches.
        "video_token_id": int(text["vocab_size"]),
        # Kimi-VL's lm_head is its own tensor (K2.5's default ties it to the embeddings).
        "tie_word_embeddings": False,
    }


def estimate_parameters(cfg: CheckpointConfig) -> int:
    """Parameter count implied by the config, for memory checks before loading."""
    t, v = cfg.text, cfg.vision
    h, vocab, layers = t["hidden_size"], t["vocab_size"], t["num_hidden_layers"]
    heads = t["num_attention_heads"]
    qk = t["qk_nope_head_dim"] + t["qk_rope_head_dim"]
    kv = t["kv_lora_rank"]
    attn = h * heads * qk + h * (kv + t["qk_rope_head_dim"]) + kv * heads * (t["qk_nope_head_dim"] + t["v_head_dim"])
    attn += heads * t["v_head_dim"] * h
    dense = 3 * h * t["intermediate_size"]
    moe_i = t["moe_intermediate_size"]
    moe = 3 * h * moe_i * (t["n_routed_experts"] + (t.get("n_shared_experts") or 0)) + h * t["n_routed_experts"]
    dense_layers = t.get("first_k_dense_replace") or 0
    lm = 2 * vocab * h + layers * attn + dense_layers * dense + (layers - dense_layers) * moe
    vh, vi, vl = v.get("hidden_size", 1152), v.get("intermediate_size", 4304), v.get("num_hidden_layers", 27)
    grid = v.get("init_pos_emb_height", 64) * v.get("init_pos_emb_width", 64)
    vision = vl * (4 * vh * vh + 2 * vh * vi) + grid * vh + 3 * v.get("patch_size", 14) ** 2 * vh
    proj = (4 * vh) ** 2 + 4 * vh * h
    return int(lm + vision + proj)
