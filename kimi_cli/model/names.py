"""Official Kimi-VL tensor names -> where each goes in transformers' native `Kimi_K25ForConditionalGeneration`.

The same mapping `from_pretrained` applies with the `kimi_k25` conversion rules plus our projector
renames (`checkpoint.PROJECTOR_KEY_MAPPING`; facts 10.1-10.3), written out so the streaming loader can
copy each tensor straight into its parameter:

* `language_model.model.X` -> `model.language_model.X`, `language_model.lm_head` -> `lm_head`;
* routed experts `...mlp.experts.E.{gate,up,down}_proj.weight` -> row `E` of the fused
  `mlp.experts.gate_up_proj` (gate first, then up, along dim 1) or `mlp.experts.down_proj`;
* MoonViT `vision_tower.encoder.blocks.N.{norm0,norm1,mlp.fc0,mlp.fc1,wo}` ->
  `model.vision_tower.layers.N.{norm1,norm2,mlp.fc1,mlp.fc2,attn.proj}`; the fused `wqkv` is cut in
  three along dim 0 into `attn.{q,k,v}_proj`, q and k permuted from interleaved-complex to rotate-half
  rope (transformers' `PermuteForRope`);
* `vision_tower.patch_embed.pos_emb.weight` -> `...pos_emb.position_embeddings`, the rest of the tower
  and the projector renamed as listed below.

Names that match no rule are not weights of the native model (`from_pretrained` reports them as
unexpected and skips them); the loader skips them too. Pure: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Where (part of) one official tensor goes: a native parameter or buffer, or a slice of it."""

    target: str
    #: Index of this piece among `parts` equal cuts of the source along dim 0 (wqkv -> q, k, v).
    part: int = 0
    parts: int = 1
    #: Permute the rows from interleaved-complex to rotate-half rope (vision q and k).
    rope: bool = False
    #: Row of the target's first dim this tensor fills (one routed expert of a fused stack).
    expert: int | None = None
    #: Which half of that row along dim 0 of the expert slice (0: gate, 1: up of `gate_up_proj`).
    half: int | None = None


#: A decoder layer's tensor, official name: (layer index, the name inside the layer).
LAYER = re.compile(r"^language_model\.model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^language_model\.model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
_QKV = re.compile(r"^vision_tower\.encoder\.blocks\.(\d+)\.wqkv\.(weight|bias)$")
_VISION_BLOCK = {"norm0": "norm1", "norm1": "norm2", "mlp.fc0": "mlp.fc1", "mlp.fc1": "mlp.fc2", "wo": "attn.proj"}
_BLOCK = re.compile(r"^vision_tower\.encoder\.blocks\.(\d+)\.(norm0|norm1|mlp\.fc0|mlp\.fc1|wo)\.(weight|bias)$")
_PROJECTOR = {"pre_norm": "pre_norm", "linear_1": "in_proj", "linear_2": "out_proj"}
_RENAMES = (
    (re.compile(r"^language_model\.model\.(.+)$"), r"model.language_model.\1"),
    (re.compile(r"^language_model\.lm_head\.(weight)$"), r"lm_head.\1"),
    (re.compile(r"^vision_tower\.encoder\.final_layernorm\.(weight|bias)$"), r"model.vision_tower.final_layernorm.\1"),
    (re.compile(r"^vision_tower\.patch_embed\.proj\.(weight|bias)$"), r"model.vision_tower.patch_embed.proj.\1"),
    (re.compile(r"^vision_tower\.patch_embed\.pos_emb\.weight$"),
     "model.vision_tower.patch_embed.pos_emb.position_embeddings"),
)


def native_pieces(official: str) -> tuple[Piece, ...]:
    """Where the official tensor `official` goes; empty when the native model has no such weight."""
    if m := _EXPERT.match(official):
        layer, expert, proj = m.groups()
        fused = "down_proj" if proj == "down" else "gate_up_proj"
        half = None if proj == "down" else ("gate", "up").index(proj)
        return (Piece(f"model.language_model.layers.{layer}.mlp.experts.{fused}", expert=int(expert), half=half),)
    if m := _QKV.match(official):
        layer, kind = m.groups()
        base = f"model.vision_tower.layers.{layer}.attn"
        return tuple(Piece(f"{base}.{p}_proj.{kind}", part=i, parts=3, rope=p != "v") for i, p in enumerate("qkv"))
    if m := _BLOCK.match(official):
        layer, module, kind = m.groups()
        return (Piece(f"model.vision_tower.layers.{layer}.{_VISION_BLOCK[module]}.{kind}"),)
    if m := re.match(r"^multi_modal_projector\.(pre_norm|linear_1|linear_2)\.(weight|bias)$", official):
        return (Piece(f"model.mm_projector.{_PROJECTOR[m.group(1)]}.{m.group(2)}"),)
    for pattern, target in _RENAMES:
        if pattern.match(official):
            return (Piece(pattern.sub(target, official)),)
    return ()
