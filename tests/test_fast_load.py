"""model/fastload.py: the streaming loader builds exactly the model `from_pretrained` builds.

The reference is transformers' own loader with the `kimi_k25` conversion mapping and our projector
renames (`PROJECTOR_KEY_MAPPING`), on the real tiny checkpoint; every parameter and buffer (the
computed ones too) must be equal, in the same dtype, and the greedy replies identical.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.errors import ModelLoadError
from kimi_cli.events.types import AnswerDelta, ThinkingDelta
from kimi_cli.model.checkpoint import PROJECTOR_KEY_MAPPING, load_model, native_config
from kimi_cli.model.config import read_checkpoint_config
from kimi_cli.model.names import Piece, native_pieces
from kimi_cli.model.tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def reference_model(ckpt: Path, dtype: str) -> torch.nn.Module:
    """The tiny checkpoint through `from_pretrained`, as the loader did before it streamed."""
    from transformers import Kimi_K25ForConditionalGeneration

    config = native_config(read_checkpoint_config(ckpt), load_tokenizer(ckpt), "sdpa")
    return Kimi_K25ForConditionalGeneration.from_pretrained(
        str(ckpt), config=config, dtype=DTYPES[dtype], device_map="cpu", key_mapping=PROJECTOR_KEY_MAPPING,
        attn_implementation="sdpa").eval()


def everything(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and all buffers, persistent or computed."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_model_equals_from_pretrained(tiny_checkpoint, dtype):
    streamed = load_model(str(tiny_checkpoint), device="cpu", dtype=dtype).model
    ref = reference_model(tiny_checkpoint, dtype)
    got, want = everything(streamed), everything(ref)
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name
    assert streamed.config.to_dict() == ref.config.to_dict()
    assert streamed.generation_config.to_dict() == ref.generation_config.to_dict()
    assert not streamed.training
    assert streamed.lm_head.weight.data_ptr() != streamed.get_input_embeddings().weight.data_ptr()


def _reply(loaded) -> tuple[str, str]:
    from kimi_cli.engine.local import LocalEngine

    settings = GenerationSettings(temperature=0.0, max_new_tokens=24)
    request = Request(messages=(Message.text("user", "What is in this picture?"),), settings=settings)
    events = list(LocalEngine(loaded, mode="plain").stream(request))
    return ("".join(e.text for e in events if isinstance(e, ThinkingDelta)),
            "".join(e.text for e in events if isinstance(e, AnswerDelta)))


def test_greedy_replies_are_identical(thinking_checkpoint):
    loaded = load_model(str(thinking_checkpoint), device="cpu")
    ref = dataclasses.replace(loaded, model=reference_model(thinking_checkpoint, "float32"))
    reply = _reply(loaded)
    assert reply == _reply(ref) and "".join(reply).strip()


def test_load_phases_are_recorded(tiny_checkpoint):
    loaded = load_model(str(tiny_checkpoint), device="cpu")
    phases = loaded.load_phases.as_dict()
    for name in ("import", "resolve", "config", "tokenizer", "device", "build", "stream", "post"):
        assert phases[name] >= 0, name
    stored = sum(t.numel() * t.element_size() for f in tiny_checkpoint.glob("*.safetensors")
                 for t in load_file(str(f)).values())
    assert loaded.load_phases.bytes_read == stored
    assert sum(s for _, s in loaded.load_phases.seconds) <= loaded.load_seconds + 1e-6
    assert "stream" in loaded.load_phases.line()
    assert phases["prefetched_bytes"] == loaded.load_phases.prefetched == 0  # the files were cached


def test_a_cold_load_reads_ahead_during_the_imports(tiny_checkpoint, monkeypatch):
    """With the shards out of the page cache, `model.prefetch` reads them beside the load (begun
    early, as the app begins it, and adopted by the load, which reports it); the weights are the
    same either way."""
    import os

    from kimi_cli.model import prefetch

    shards = sorted(tiny_checkpoint.glob("*.safetensors"))
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    prefetch.evict(shards)
    monkeypatch.setattr(prefetch, "MIN_CPUS", 1)  # CI's 2 CPUs would keep it off
    missing = prefetch.uncached_fraction(shards)
    if missing is None or missing < prefetch.MIN_MISSING:
        pytest.skip(f"this filesystem keeps the pages cached (uncached fraction {missing})")
    begun = prefetch.begin(tiny_checkpoint)  # as the app does, before it imports torch
    assert begun is not None
    assert begun.join(timeout=60) == sum(f.stat().st_size for f in shards)
    cold = load_model(str(tiny_checkpoint), device="cpu")  # adopts those readers and reports them
    warm = load_model(str(tiny_checkpoint), device="cpu")
    assert cold.load_phases.prefetched == begun.bytes_read
    assert warm.load_phases.prefetched == 0
    assert "read ahead" in cold.load_phases.line()
    cold_sd, warm_sd = cold.model.state_dict(), warm.model.state_dict()
    assert cold_sd.keys() == warm_sd.keys()
    assert all(torch.equal(cold_sd[k], warm_sd[k]) for k in cold_sd)


@pytest.mark.parametrize(("official", "pieces"), [
    ("language_model.model.embed_tokens.weight", (Piece("model.language_model.embed_tokens.weight"),)),
    ("language_model.lm_head.weight", (Piece("lm_head.weight"),)),
    ("language_model.model.layers.3.mlp.experts.7.up_proj.weight",
     (Piece("model.language_model.layers.3.mlp.experts.gate_up_proj", expert=7, half=1),)),
    ("language_model.model.layers.3.mlp.experts.7.down_proj.weight",
     (Piece("model.language_model.layers.3.mlp.experts.down_proj", expert=7),)),
    ("language_model.model.layers.3.mlp.shared_experts.up_proj.weight",
     (Piece("model.language_model.layers.3.mlp.shared_experts.up_proj.weight"),)),
    ("vision_tower.encoder.blocks.2.norm0.bias", (Piece("model.vision_tower.layers.2.norm1.bias"),)),
    ("vision_tower.encoder.blocks.2.mlp.fc1.weight", (Piece("model.vision_tower.layers.2.mlp.fc2.weight"),)),
    ("vision_tower.encoder.blocks.2.wo.weight", (Piece("model.vision_tower.layers.2.attn.proj.weight"),)),
    ("vision_tower.encoder.blocks.0.wqkv.bias", (
        Piece("model.vision_tower.layers.0.attn.q_proj.bias", part=0, parts=3, rope=True),
        Piece("model.vision_tower.layers.0.attn.k_proj.bias", part=1, parts=3, rope=True),
        Piece("model.vision_tower.layers.0.attn.v_proj.bias", part=2, parts=3))),
    ("vision_tower.patch_embed.pos_emb.weight",
     (Piece("model.vision_tower.patch_embed.pos_emb.position_embeddings"),)),
    ("vision_tower.encoder.final_layernorm.weight", (Piece("model.vision_tower.final_layernorm.weight"),)),
    ("multi_modal_projector.linear_2.bias", (Piece("model.mm_projector.out_proj.bias"),)),
    ("something.else", ()),
])
def test_official_names_map_as_transformers_maps_them(official, pieces):
    assert native_pieces(official) == pieces


# --- an untrusted checkpoint: one line, exit code 4 ------------------------------------------------

O_PROJ = "language_model.model.layers.0.self_attn.o_proj.weight"


def _edit_tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    def edit(ckpt: Path) -> None:
        for shard in ckpt.glob("*.safetensors"):
            tensors = load_file(str(shard))
            change(tensors)
            save_file(tensors, str(shard), metadata={"format": "pt"})
    return edit


def _bad_index(ckpt: Path) -> None:
    index = ckpt / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"][O_PROJ] = "../elsewhere.safetensors"
    index.write_text(json.dumps(data))


def _set(name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.update({name: make(t[name]).contiguous()}) if name in t else None


def _drop(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.pop(name, None)


@pytest.mark.parametrize(("damage", "needles"), [
    pytest.param(_edit_tensors(_drop(O_PROJ)), ("1 weights missing", "o_proj.weight"), id="missing"),
    pytest.param(_edit_tensors(_drop("language_model.model.layers.1.mlp.experts.3.up_proj.weight")),
                 ("weights missing", "experts.gate_up_proj"), id="missing-expert"),
    pytest.param(_edit_tensors(_set(O_PROJ, lambda x: x[:, :-1])), ("o_proj.weight", "shape", "expected"),
                 id="wrong-shape"),
    pytest.param(_edit_tensors(_set("vision_tower.encoder.blocks.0.wqkv.weight", lambda x: x[:-3])),
                 ("wqkv.weight", "shape"), id="wrong-shape-qkv"),
    pytest.param(_edit_tensors(_set(O_PROJ, lambda x: x.to(torch.int32))), ("o_proj.weight", "dtype int32"),
                 id="wrong-dtype"),
    pytest.param(_bad_index, ("model.safetensors.index.json", "not a valid safetensors index"), id="bad-index"),
])
def test_a_damaged_checkpoint_is_one_line(tiny_checkpoint, tmp_path, damage, needles):
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    damage(copy)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(copy), device="cpu")
    err = info.value
    assert err.exit_code == 4 and "\n" not in err.message and (err.hint is None or "\n" not in err.hint)
    for needle in needles:
        assert needle in err.message, err.message


def test_a_float_tensor_of_another_dtype_is_converted(tiny_checkpoint, tmp_path):
    """A bf16 tensor in a float32 checkpoint loads, converted on the device, as transformers casts it."""
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    _edit_tensors(_set(O_PROJ, lambda x: x.to(torch.bfloat16)))(copy)
    model = load_model(str(copy), device="cpu", dtype="float32").model
    got = model.get_parameter("model.language_model.layers.0.self_attn.o_proj.weight")
    assert got.dtype == torch.float32
    assert torch.equal(got, reference_model(copy, "float32").get_parameter(
        "model.language_model.layers.0.self_attn.o_proj.weight"))
