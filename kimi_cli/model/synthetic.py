"""Random-weight checkpoints in the official Kimi-VL file layout.

No real weights are reachable where this project is built and tested, so the project writes its own
checkpoints with exactly the files and tensor names of `moonshotai/Kimi-VL-A3B-Thinking-2506`:
`config.json` (model_type `kimi_vl`), sharded `model-0000X-of-0000N.safetensors` plus
`model.safetensors.index.json`, `tiktoken.model`, `tokenizer_config.json`,
`preprocessor_config.json`, `generation_config.json` and `chat_template.jinja`.

Presets: `tiny` (a few MB; loads and generates on a CPU in seconds, with a small trained BPE and the
real special-token layout) and `full` (the real shapes and vocabulary; 32.8 GB in bf16, for GPU
benchmarks: speed and memory do not depend on the weights' values).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_cli.model.facts import (
    BOS,
    DEFAULT_SYSTEM_PROMPT,
    EOS,
    FIRST_SPECIAL_ID,
    GENERATION_PROMPT,
    IM_END,
    MEDIA_PAD,
    NAMED_SPECIAL_OFFSETS,
    NUM_RESERVED_SPECIAL,
    PAD,
    THINK_CLOSE,
    image_block,
    turn_header,
)

TINY_BASE_VOCAB = 1024
FULL_BASE_VOCAB = FIRST_SPECIAL_ID  # the special ids follow the BPE vocabulary


@dataclass(frozen=True)
class Preset:
    """Shapes of a synthetic checkpoint; `base_vocab` is the BPE size before the 256 specials."""

    name: str
    base_vocab: int
    vision: dict[str, Any]
    text: dict[str, Any]
    in_token_limit: int
    shard_bytes: int


def _text_config(**over: Any) -> dict[str, Any]:
    """The official Kimi-VL-A3B text_config (facts 1.3), with overrides for smaller presets."""
    cfg: dict[str, Any] = {
        "model_type": "deepseek_v3", "vocab_size": FIRST_SPECIAL_ID + NUM_RESERVED_SPECIAL, "hidden_size": 2048,
        "intermediate_size": 11264, "moe_intermediate_size": 1408, "num_hidden_layers": 27,
        "num_attention_heads": 16, "num_key_value_heads": 16, "q_lora_rank": None,
        "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
        "n_routed_experts": 64, "num_experts_per_tok": 6, "n_shared_experts": 2,
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "topk_method": "noaux_tc",
        "scoring_func": "sigmoid", "n_group": 1, "topk_group": 1, "routed_scaling_factor": 2.446,
        "norm_topk_prob": True, "aux_loss_alpha": 0.001, "seq_aux": True, "hidden_act": "silu",
        "rms_norm_eps": 1e-5, "rope_theta": 800000.0, "rope_scaling": None,
        "max_position_embeddings": 131072, "attention_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": False, "bos_token_id": FIRST_SPECIAL_ID + NAMED_SPECIAL_OFFSETS[BOS],
        "eos_token_id": FIRST_SPECIAL_ID + NAMED_SPECIAL_OFFSETS[EOS],
        "pad_token_id": FIRST_SPECIAL_ID + NAMED_SPECIAL_OFFSETS[PAD], "initializer_range": 0.02, "torch_dtype": "bfloat16",
    }
    cfg.update(over)
    return cfg


def _vision_config(**over: Any) -> dict[str, Any]:
    """The official MoonViT vision_config (facts 1.2), with overrides for smaller presets."""
    cfg: dict[str, Any] = {
        "model_type": "moonvit", "patch_size": 14, "init_pos_emb_height": 64, "init_pos_emb_width": 64,
        "num_attention_heads": 16, "num_hidden_layers": 27, "hidden_size": 1152,
        "intermediate_size": 4304, "merge_kernel_size": [2, 2], "torch_dtype": "bfloat16",
    }
    cfg.update(over)
    return cfg


def _tiny() -> Preset:
    first = TINY_BASE_VOCAB
    return Preset(
        name="tiny",
        base_vocab=TINY_BASE_VOCAB,
        vision=_vision_config(
            num_attention_heads=2, num_hidden_layers=2, hidden_size=32, intermediate_size=64,
            init_pos_emb_height=8, init_pos_emb_width=8,
        ),
        text=_text_config(
            vocab_size=first + 256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=8,
            num_experts_per_tok=2, max_position_embeddings=16384, bos_token_id=first,
            eos_token_id=first + NAMED_SPECIAL_OFFSETS[EOS], pad_token_id=first + NAMED_SPECIAL_OFFSETS[PAD], torch_dtype="float32",
        ),
        # The 2504 limit: keeps the tiny vision tower's attention small on a CPU.
        in_token_limit=4096,
        shard_bytes=2_000_000,
    )


def _full() -> Preset:
    return Preset(
        name="full", base_vocab=FULL_BASE_VOCAB, vision=_vision_config(), text=_text_config(),
        in_token_limit=16384, shard_bytes=5_000_000_000,
    )


PRESETS = {"tiny": _tiny, "full": _full}


def get_preset(name: str) -> Preset:
    """A preset by name (`tiny`, `full`)."""
    return PRESETS[name]()


def tensor_shapes(text: dict[str, Any], vision: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of the official checkpoint, by official name and shape, in file order."""
    yield from _vision_shapes(vision)
    vh, m = vision["hidden_size"], vision["merge_kernel_size"]
    merged = vh * m[0] * m[1]
    yield "multi_modal_projector.pre_norm.weight", (vh,)
    yield "multi_modal_projector.pre_norm.bias", (vh,)
    yield "multi_modal_projector.linear_1.weight", (merged, merged)
    yield "multi_modal_projector.linear_1.bias", (merged,)
    yield "multi_modal_projector.linear_2.weight", (text["hidden_size"], merged)
    yield "multi_modal_projector.linear_2.bias", (text["hidden_size"],)
    yield from _language_shapes(text)


def _vision_shapes(v: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    h, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    yield "vision_tower.patch_embed.proj.weight", (h, 3, p, p)
    yield "vision_tower.patch_embed.proj.bias", (h,)
    yield "vision_tower.patch_embed.pos_emb.weight", (v["init_pos_emb_height"], v["init_pos_emb_width"], h)
    for n in range(v["num_hidden_layers"]):
        b = f"vision_tower.encoder.blocks.{n}"
        for norm in ("norm0", "norm1"):
            yield f"{b}.{norm}.weight", (h,)
            yield f"{b}.{norm}.bias", (h,)
        yield f"{b}.wqkv.weight", (3 * h, h)
        yield f"{b}.wqkv.bias", (3 * h,)
        yield f"{b}.wo.weight", (h, h)
        yield f"{b}.wo.bias", (h,)
        yield f"{b}.mlp.fc0.weight", (i, h)
        yield f"{b}.mlp.fc0.bias", (i,)
        yield f"{b}.mlp.fc1.weight", (h, i)
        yield f"{b}.mlp.fc1.bias", (h,)
    yield "vision_tower.encoder.final_layernorm.weight", (h,)
    yield "vision_tower.encoder.final_layernorm.bias", (h,)


def _mlp(prefix: str, hidden: int, inter: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.gate_proj.weight", (inter, hidden)
    yield f"{prefix}.up_proj.weight", (inter, hidden)
    yield f"{prefix}.down_proj.weight", (hidden, inter)


def _language_shapes(t: dict[str, Any]) -> Iterator[tuple[str, tuple[int, ...]]]:
    h, heads, kv = t["hidden_size"], t["num_attention_heads"], t["kv_lora_rank"]
    rope, nope, vd = t["qk_rope_head_dim"], t["qk_nope_head_dim"], t["v_head_dim"]
    yield "language_model.model.embed_tokens.weight", (t["vocab_size"], h)
    for n in range(t["num_hidden_layers"]):
        b = f"language_model.model.layers.{n}"
        yield f"{b}.self_attn.q_proj.weight", (heads * (nope + rope), h)
        yield f"{b}.self_attn.kv_a_proj_with_mqa.weight", (kv + rope, h)
        yield f"{b}.self_attn.kv_a_layernorm.weight", (kv,)
        yield f"{b}.self_attn.kv_b_proj.weight", (heads * (nope + vd), kv)
        yield f"{b}.self_attn.o_proj.weight", (h, heads * vd)
        yield f"{b}.input_layernorm.weight", (h,)
        yield f"{b}.post_attention_layernorm.weight", (h,)
        if n < t["first_k_dense_replace"]:
            yield from _mlp(f"{b}.mlp", h, t["intermediate_size"])
            continue
        yield f"{b}.mlp.gate.weight", (t["n_routed_experts"], h)
        yield f"{b}.mlp.gate.e_score_correction_bias", (t["n_routed_experts"],)
        for e in range(t["n_routed_experts"]):
            yield from _mlp(f"{b}.mlp.experts.{e}", h, t["moe_intermediate_size"])
        yield from _mlp(f"{b}.mlp.shared_experts", h, t["moe_intermediate_size"] * t["n_shared_experts"])
    yield "language_model.model.norm.weight", (h,)
    yield "language_model.lm_head.weight", (t["vocab_size"], h)


def is_norm(name: str) -> bool:
    """Whether a tensor is a normalisation scale (initialised near 1, not near 0)."""
    return name.endswith(".weight") and any(
        k in name for k in ("norm0", "norm1", "layernorm", "pre_norm", "final_layernorm", ".norm.")
    )


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed, so that every tensor is reproducible on its own."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


#: The official chat template (facts 8), written from the format pieces in `facts`.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    f"{turn_header('system')}{DEFAULT_SYSTEM_PROMPT}{IM_END}"
    "{%- endif -%}"
    f"{{%- if message['role'] == 'system' -%}}{turn_header('system')}"
    f"{{%- elif message['role'] == 'user' -%}}{turn_header('user')}"
    f"{{%- else -%}}{GENERATION_PROMPT}{{%- endif -%}}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    f"{image_block(MEDIA_PAD)}"
    "{%- else -%}{{ item['text'] }}{%- endif -%}"
    f"{{%- endfor -%}}{{%- endif -%}}{IM_END}"
    "{%- endfor -%}"
    f"{{%- if add_generation_prompt -%}}{GENERATION_PROMPT}{{%- endif -%}}"
)


#: The template of a thinking checkpoint: as `CHAT_TEMPLATE`, but an assistant turn in the history
#: keeps only what follows its last `◁/think▷`, as the official demo strips it and as our prompt
#: builder does. `facts.checkpoint_thinks` recognises a thinking checkpoint by the marker in it.
THINKING_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if message['content'] is string -%}{{ message['content'] }}",
    "{%- if message['content'] is string and message['role'] == 'assistant' -%}"
    f"{{{{ message['content'].split('{THINK_CLOSE}')[-1] | trim }}}}"
    "{%- elif message['content'] is string -%}{{ message['content'] }}",
)


def top_level_config(p: Preset, first_special: int) -> dict[str, Any]:
    """`config.json` in the official form (model_type `kimi_vl`)."""
    return {
        "architectures": ["KimiVLForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_kimi_vl.KimiVLConfig",
            "AutoModel": "modeling_kimi_vl.KimiVLForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_kimi_vl.KimiVLForConditionalGeneration",
        },
        "model_type": "kimi_vl",
        "ignore_index": -100,
        "media_placeholder_token_id": first_special + NAMED_SPECIAL_OFFSETS[MEDIA_PAD],
        "pad_token_id": 0,
        "torch_dtype": p.text["torch_dtype"],
        "transformers_version": "4.51.3",
        "vision_config": p.vision,
        "text_config": p.text,
    }


def side_files(p: Preset, first_special: int) -> dict[str, dict[str, Any]]:
    """The small JSON files next to the weights."""
    return {
        "preprocessor_config.json": {
            "auto_map": {"AutoImageProcessor": "image_processing_kimi_vl.KimiVLImageProcessor",
                         "AutoProcessor": "processing_kimi_vl.KimiVLProcessor"},
            "image_processor_type": "KimiVLImageProcessor",
            "processor_class": "KimiVLProcessor",
            "in_token_limit": p.in_token_limit,
            "merge_kernel_size": [2, 2],
            "num_pooled_tokens": 1024,
            "pad_input": True,
            "patch_size": 14,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
        "generation_config.json": {
            "bos_token_id": first_special,
            "eos_token_id": [first_special + NAMED_SPECIAL_OFFSETS[IM_END], first_special + NAMED_SPECIAL_OFFSETS[EOS]],
            "do_sample": True,
            "temperature": 0.8,
            "max_new_tokens": 32768,
        },
    }


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, dtype: Any, device: str) -> Any:
    """One reproducible random tensor: norms near 1, router bias small fp32, the rest N(0, 0.02)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(tensor_seed(seed, name))
    if name.endswith("e_score_correction_bias"):
        # Kept in fp32 (as transformers does) and non-zero, so selection-only bias is exercised.
        return (torch.randn(shape, generator=gen, device=device) * 0.1).float().cpu()
    t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * 0.02
    if is_norm(name):
        t = t + 1.0
    return t.to(dtype).cpu()


def write_weights(out_dir: Path, p: Preset, seed: int, device: str = "cpu") -> int:
    """Write sharded safetensors and the index; returns the number of tensors written."""
    import torch

    dtype = torch.float32 if p.text["torch_dtype"] == "float32" else torch.bfloat16
    tensors = ((name, _random_tensor(name, shape, seed, dtype, device))
               for name, shape in tensor_shapes(p.text, p.vision))
    return save_sharded(out_dir, tensors, p.shard_bytes)


def save_sharded(out_dir: Path, named: Iterable[tuple[str, Any]], shard_bytes: int) -> int:
    """Write `(name, tensor)` pairs, in order, as `model-0000i-of-0000n.safetensors` shards of at
    most `shard_bytes` each, plus `model.safetensors.index.json`; returns the tensor count.

    A shard is written as soon as it is full, so at most one shard is held in memory (the full
    preset draws 32.8 GB of weights this way).
    """
    from safetensors.torch import save_file

    tmp_names: list[Path] = []
    weight_map: dict[str, int] = {}
    shard: dict[str, Any] = {}
    size = total = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if shard and size + nbytes > shard_bytes:
            tmp_names.append(_flush(out_dir, shard, len(tmp_names), save_file))
            size = 0
        shard[name] = tensor.contiguous()
        weight_map[name] = len(tmp_names)
        size += nbytes
        total += nbytes
    if shard:
        tmp_names.append(_flush(out_dir, shard, len(tmp_names), save_file))
    return _finish_index(out_dir, tmp_names, weight_map, total)


def _flush(out_dir: Path, shard: dict[str, Any], index: int, save_file: Any) -> Path:
    path = out_dir / f".shard-{index:05d}.safetensors"
    save_file(shard, str(path), metadata={"format": "pt"})
    shard.clear()
    return path


def _finish_index(out_dir: Path, tmp_names: list[Path], weight_map: dict[str, int], total: int) -> int:
    """Rename shards to their final `-of-N` names (N is known only at the end) and write the index."""
    n = len(tmp_names)
    final = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for tmp, name in zip(tmp_names, final, strict=True):
        tmp.replace(out_dir / name)
    index = {"metadata": {"total_size": total},
             "weight_map": {name: final[i] for name, i in weight_map.items()}}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(weight_map)


def write_checkpoint(out_dir: Path, preset: str = "tiny", seed: int = 0, device: str = "cpu",
                     thinking: bool = False) -> Path:
    """Write a complete synthetic checkpoint in the official layout to `out_dir`.

    `thinking` writes the chat template of a thinking checkpoint (`THINKING_CHAT_TEMPLATE`). This
    writes in place; `kimi_cli.model.synth_output.synthesize` is the safe, all-or-nothing front.
    """
    from kimi_cli.model import synth_tokenizer as st

    p = get_preset(preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranks = st.train_tiny_bpe(st.TINY_CORPUS, TINY_BASE_VOCAB)
    if p.base_vocab != len(ranks):
        ranks = st.pad_ranks(ranks, p.base_vocab, seed)
    template = THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE
    first = st.write_tokenizer_files(out_dir, ranks, template)
    (out_dir / "chat_template.jinja").write_text(template + "\n", encoding="utf-8")
    (out_dir / "config.json").write_text(json.dumps(top_level_config(p, first), indent=2) + "\n")
    for fname, data in side_files(p, first).items():
        (out_dir / fname).write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "README.md").write_text(
        f"# Synthetic Kimi-VL checkpoint ({p.name}, seed {seed})\n\n"
        "Random weights in the official file layout, written by `kimi synth`. It produces\n"
        "meaningless text; it exists to test loading and to measure speed and memory.\n"
    )
    write_weights(out_dir, p, seed, device)
    return out_dir
