"""Tests for kimi_cli.model.checkpoint: the official tensor layout, loading, and one-line load errors.

The expected layout is written here from the facts (section 2), independently of
`kimi_cli.model.synthetic`, so that a slip in either the writer or the loader shows up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from math import prod
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from kimi_cli.errors import EXIT_MODEL, ModelLoadError
from kimi_cli.model.checkpoint import PROJECTOR_KEY_MAPPING, LoadedModel, load_model, native_config
from kimi_cli.model.config import CheckpointConfig, estimate_parameters, read_checkpoint_config
from kimi_cli.model.synthetic import get_preset, tensor_shapes
from kimi_cli.model.tokenizer import load_tokenizer

VISION_LEAVES = ("norm0.weight", "norm0.bias", "norm1.weight", "norm1.bias", "wqkv.weight", "wqkv.bias",
                 "wo.weight", "wo.bias", "mlp.fc0.weight", "mlp.fc0.bias", "mlp.fc1.weight", "mlp.fc1.bias")
ATTN_LEAVES = ("self_attn.q_proj.weight", "self_attn.kv_a_proj_with_mqa.weight",
               "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight", "self_attn.o_proj.weight",
               "input_layernorm.weight", "post_attention_layernorm.weight")
MLP = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")

#: Shapes of the real checkpoint, from the facts' table (section 2).
FULL_SHAPES = {
    "vision_tower.patch_embed.proj.weight": (1152, 3, 14, 14),
    "vision_tower.patch_embed.pos_emb.weight": (64, 64, 1152),
    "vision_tower.encoder.blocks.26.wqkv.weight": (3456, 1152),
    "vision_tower.encoder.blocks.0.wqkv.bias": (3456,),
    "vision_tower.encoder.blocks.3.wo.weight": (1152, 1152),
    "vision_tower.encoder.blocks.3.mlp.fc0.weight": (4304, 1152),
    "vision_tower.encoder.blocks.3.mlp.fc1.weight": (1152, 4304),
    "vision_tower.encoder.final_layernorm.bias": (1152,),
    "multi_modal_projector.pre_norm.weight": (1152,),
    "multi_modal_projector.linear_1.weight": (4608, 4608),
    "multi_modal_projector.linear_2.weight": (2048, 4608),
    "language_model.model.embed_tokens.weight": (163840, 2048),
    "language_model.model.layers.5.self_attn.q_proj.weight": (3072, 2048),
    "language_model.model.layers.5.self_attn.kv_a_proj_with_mqa.weight": (576, 2048),
    "language_model.model.layers.5.self_attn.kv_a_layernorm.weight": (512,),
    "language_model.model.layers.5.self_attn.kv_b_proj.weight": (4096, 512),
    "language_model.model.layers.5.self_attn.o_proj.weight": (2048, 2048),
    "language_model.model.layers.0.mlp.gate_proj.weight": (11264, 2048),
    "language_model.model.layers.0.mlp.down_proj.weight": (2048, 11264),
    "language_model.model.layers.1.mlp.gate.weight": (64, 2048),
    "language_model.model.layers.1.mlp.gate.e_score_correction_bias": (64,),
    "language_model.model.layers.26.mlp.experts.63.up_proj.weight": (1408, 2048),
    "language_model.model.layers.26.mlp.experts.63.down_proj.weight": (2048, 1408),
    "language_model.model.layers.26.mlp.shared_experts.gate_proj.weight": (2816, 2048),
    "language_model.model.layers.26.mlp.shared_experts.down_proj.weight": (2048, 2816),
    "language_model.model.norm.weight": (2048,),
    "language_model.lm_head.weight": (163840, 2048),
}


def official_names(vision_layers: int, text_layers: int, first_dense: int, experts: int) -> set[str]:
    """Every tensor name of the official Kimi-VL checkpoint layout (facts section 2)."""
    names = {f"vision_tower.patch_embed.{n}" for n in ("proj.weight", "proj.bias", "pos_emb.weight")}
    names |= {f"vision_tower.encoder.final_layernorm.{n}" for n in ("weight", "bias")}
    names |= {f"vision_tower.encoder.blocks.{i}.{leaf}" for i in range(vision_layers) for leaf in VISION_LEAVES}
    names |= {f"multi_modal_projector.{m}.{p}" for m in ("pre_norm", "linear_1", "linear_2")
              for p in ("weight", "bias")}
    names |= {"language_model.model.embed_tokens.weight", "language_model.model.norm.weight",
              "language_model.lm_head.weight"}
    for i in range(text_layers):
        layer = f"language_model.model.layers.{i}"
        names |= {f"{layer}.{leaf}" for leaf in ATTN_LEAVES}
        if i < first_dense:
            names |= {f"{layer}.mlp.{leaf}" for leaf in MLP}
            continue
        names |= {f"{layer}.mlp.gate.weight", f"{layer}.mlp.gate.e_score_correction_bias"}
        names |= {f"{layer}.mlp.experts.{e}.{leaf}" for e in range(experts) for leaf in MLP}
        names |= {f"{layer}.mlp.shared_experts.{leaf}" for leaf in MLP}
    return names


def names_for(preset: str) -> set[str]:
    """`official_names` with a preset's dimensions."""
    p = get_preset(preset)
    return official_names(p.vision["num_hidden_layers"], p.text["num_hidden_layers"],
                          p.text["first_k_dense_replace"], p.text["n_routed_experts"])


def by_part(items: list[tuple[str, int]]) -> dict[str, int]:
    """Sum values by the first name component (vision_tower, multi_modal_projector, language_model)."""
    out: dict[str, int] = {}
    for name, value in items:
        part = name.split(".")[0]
        out[part] = out.get(part, 0) + value
    return out


def file_tensors(checkpoint: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, shard file name) of every tensor in the checkpoint's safetensors files."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in list(f.keys()):
                assert name not in out, f"{name} in two shards"
                out[name] = (tuple(f.get_slice(name).get_shape()), shard.name)
    return out


# --- layout ---------------------------------------------------------------------------------------


def test_full_preset_layout_and_counts() -> None:
    """The full preset has the real 5652 tensors (329 + 6 + 5317) with the facts' shapes."""
    p = get_preset("full")
    shapes = dict(tensor_shapes(p.text, p.vision))
    assert len(shapes) == 5652
    assert by_part([(n, 1) for n in shapes]) == {"vision_tower": 329, "multi_modal_projector": 6,
                                                 "language_model": 5317}
    assert set(shapes) == names_for("full")
    for name, shape in FULL_SHAPES.items():
        assert shapes[name] == shape, name


def test_full_preset_parameter_count() -> None:
    """16.41 B parameters: LM 15.960 B, MoonViT 0.417 B, projector 0.031 B; the estimate agrees."""
    p = get_preset("full")
    counts = [(n, prod(s)) for n, s in tensor_shapes(p.text, p.vision)]
    total = sum(c for _, c in counts)
    parts = by_part(counts)
    assert round(total / 1e9, 2) == 16.41
    assert round(parts["language_model"] / 1e9, 3) == 15.960
    assert round(parts["vision_tower"] / 1e9, 3) == 0.417
    assert round(parts["multi_modal_projector"] / 1e9, 3) == 0.031
    estimate = estimate_parameters(CheckpointConfig(p.text, p.vision, 163605, Path("config.json")))
    assert abs(estimate - total) / total < 1e-3


def test_tiny_checkpoint_files_follow_official_layout(tiny_checkpoint: Path) -> None:
    """Shards hold exactly the official names once each; the index and the writer's shapes agree."""
    p = get_preset("tiny")
    found = file_tensors(tiny_checkpoint)
    assert set(found) == names_for("tiny")
    assert {n: s for n, (s, _) in found.items()} == dict(tensor_shapes(p.text, p.vision))
    index = json.loads((tiny_checkpoint / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {n: shard for n, (_, shard) in found.items()}
    assert all(shard.startswith("model-") and "-of-" in shard for _, shard in found.values())


# --- loading --------------------------------------------------------------------------------------


def test_loader_mapping_consumes_every_tensor(tiny_checkpoint: Path) -> None:
    """The loader's config + key mapping: nothing missing, unexpected or mismatched; sizes add up."""
    from transformers import Kimi_K25ForConditionalGeneration

    config = native_config(read_checkpoint_config(tiny_checkpoint), load_tokenizer(tiny_checkpoint))
    model, info = Kimi_K25ForConditionalGeneration.from_pretrained(
        str(tiny_checkpoint), config=config, dtype=torch.float32, key_mapping=PROJECTOR_KEY_MAPPING,
        output_loading_info=True,
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not info["error_msgs"]
    in_files = sum(prod(s) for s, _ in file_tensors(tiny_checkpoint).values())
    assert sum(v.numel() for v in model.state_dict().values()) == in_files


def test_load_model_float32(tiny_checkpoint: Path) -> None:
    """The public loader gives the native class in float32, in eval mode, with the checkpoint's ids."""
    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="float32")
    assert type(loaded.model).__name__ == "Kimi_K25ForConditionalGeneration"
    assert loaded.model.dtype == torch.float32 and not loaded.model.training
    assert loaded.model.config.image_token_id == loaded.tokenizer.media_pad_id
    assert loaded.checkpoint.image_token_id == loaded.tokenizer.media_pad_id


def test_lm_head_is_not_tied(tiny_model: LoadedModel, tiny_checkpoint: Path) -> None:
    """lm_head is its own tensor, equal to the checkpoint's, not the embedding table."""
    model = tiny_model.model
    embed = model.get_input_embeddings().weight
    assert model.config.tie_word_embeddings is False
    assert model.config.text_config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != embed.data_ptr()
    shard = file_tensors(tiny_checkpoint)["language_model.lm_head.weight"][1]
    with safe_open(str(tiny_checkpoint / shard), framework="pt") as f:
        official = f.get_tensor("language_model.lm_head.weight")
    assert torch.equal(model.lm_head.weight.float(), official.float())
    assert not torch.equal(model.lm_head.weight, embed)


# --- load errors: exit code 4, one line --------------------------------------------------------


def _drop(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _drop_weights(d: Path) -> None:
    for f in d.glob("*.safetensors"):
        f.unlink()


def _edit_config(**changes: Any) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(changes)
        (d / "config.json").write_text(json.dumps(cfg))
    return edit


def _corrupt_config(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "kimi_vl", ')


def _truncate_shard(d: Path) -> None:
    shard = next(d.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:4096])


def assert_one_line_load_error(err: ModelLoadError, *needles: str) -> None:
    """Exit code 4, a one-line message (and hint) that mentions every needle."""
    assert err.exit_code == EXIT_MODEL == 4
    assert err.message and "\n" not in err.message
    assert err.hint is None or "\n" not in err.hint
    for needle in needles:
        assert needle in err.message


def test_missing_directory(tmp_path: Path) -> None:
    """A directory that does not exist."""
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path / "nowhere"), device="cpu")
    assert_one_line_load_error(info.value, "nowhere", "not found")


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        pytest.param(_drop("config.json"), ("config.json", "missing"), id="no-config"),
        pytest.param(_drop("tiktoken.model"), ("tiktoken.model", "missing"), id="no-tokenizer"),
        pytest.param(_edit_config(model_type="llava"), ("model_type", "llava", "kimi_vl"), id="wrong-model-type"),
        pytest.param(_drop_weights, ("safetensors",), id="no-safetensors"),
        pytest.param(_corrupt_config, ("config.json", "not valid JSON"), id="corrupt-config"),
        pytest.param(_edit_config(text_config=None), ("text_config",), id="no-text-config"),
        pytest.param(_truncate_shard, ("cannot load weights",), id="truncated-shard"),
    ],
)
def test_broken_checkpoint(tiny_checkpoint: Path, tmp_path: Path, damage: Callable[[Path], None],
                           needles: tuple[str, ...]) -> None:
    """A copy of the tiny checkpoint, damaged one way, fails with one line and exit code 4."""
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    damage(copy)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(copy), device="cpu")
    assert_one_line_load_error(info.value, *needles)


HUB_PROBE = """
import json
from kimi_cli.errors import ModelLoadError
from kimi_cli.model.checkpoint import load_model
try:
    load_model("moonshotai/Kimi-VL-A3B-Thinking-2506", device="cpu")
except ModelLoadError as err:
    print(json.dumps({"code": err.exit_code, "message": err.message, "hint": err.hint}))
"""


@pytest.mark.slow
def test_hub_id_unreachable(tmp_path: Path) -> None:
    """A hub id with an empty cache and the hub offline: 'unreachable', exit code 4.

    huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when it is imported, so this runs in a fresh
    interpreter with that environment.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run([sys.executable, "-c", HUB_PROBE], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    err = ModelLoadError(result["message"], result["hint"])
    assert result["code"] == 4
    assert_one_line_load_error(err, "Kimi-VL-A3B-Thinking-2506", "unreachable")
