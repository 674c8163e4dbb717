"""The language model under the native load equals a plain `DeepseekV3ForCausalLM` on the same tensors.

The plain model is built here by hand from the official tensor names (`language_model.model.X` ->
`model.X`, `language_model.lm_head` -> `lm_head`, per-expert matrices stacked into transformers' fused
`gate_up_proj` [E, 2I, H] (gate rows first) and `down_proj` [E, H, I]), so the test checks the
loader's renames and expert merging, not transformers against itself. A last test checks that image
features land in the `<|media_pad|>` positions, in order, using the independent reference tower.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from reference_moonvit import ReferenceMoonViT, read_official_tensors

from kimi_cli.model.checkpoint import LoadedModel, load_model
from kimi_cli.model.compat import cache_kwarg, output_cache
from kimi_cli.model.config import read_checkpoint_config, text_config_dict

EXPERT = re.compile(r"^(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")
RTOL = 1e-5  # max |diff| relative to max |logit|; fp32 on both sides, same kernels


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint: Path) -> Path:
    """The session's tiny synthetic checkpoint (official layout), read-only here."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def native(checkpoint: Path) -> LoadedModel:
    """The checkpoint loaded through the public loader onto `Kimi_K25ForConditionalGeneration`."""
    return load_model(str(checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def plain(checkpoint: Path, native: LoadedModel) -> Any:
    """A plain `DeepseekV3ForCausalLM` whose state dict is built here from the official tensors."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(**text_config_dict(read_checkpoint_config(checkpoint)))
    config._attn_implementation = native.model.config.text_config._attn_implementation
    model = DeepseekV3ForCausalLM(config).float().eval()
    state = plain_state_dict(read_official_tensors(checkpoint, ("language_model.",)))
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return model


def plain_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official `language_model.*` tensors -> a `DeepseekV3ForCausalLM` state dict."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[str, dict[int, torch.Tensor]]] = {}
    for name, tensor in tensors.items():
        local = name.removeprefix("language_model.")
        match = EXPERT.match(local)
        if match is None:
            out[local] = tensor
            continue
        prefix, index, kind = match[1], int(match[2]), match[3]
        experts.setdefault(prefix, {}).setdefault(kind, {})[index] = tensor
    for prefix, kinds in experts.items():
        out.update(fused_experts(prefix, kinds))
    return out


def fused_experts(prefix: str, kinds: dict[str, dict[int, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Per-expert gate/up [I, H] and down [H, I] -> gate_up_proj [E, 2I, H] and down_proj [E, H, I]."""
    count = len(kinds["gate"])
    assert sorted(kinds["gate"]) == sorted(kinds["up"]) == sorted(kinds["down"]) == list(range(count))
    gate = torch.stack([kinds["gate"][e] for e in range(count)])
    up = torch.stack([kinds["up"][e] for e in range(count)])
    yield f"{prefix}.gate_up_proj", torch.cat([gate, up], dim=1)
    yield f"{prefix}.down_proj", torch.stack([kinds["down"][e] for e in range(count)])


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL) -> None:
    """Max abs difference below `rtol` times the reference's largest magnitude."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    diff = (got - want).abs().max().item()
    assert diff <= rtol * scale, f"max |diff| {diff:.3g} > {rtol:g} * {scale:.3g}"


def prompt_ids(native: LoadedModel, length: int, seed: int) -> torch.Tensor:
    """Random ordinary (non-special) token ids, batch of one."""
    gen = torch.Generator().manual_seed(seed)
    vocab = native.tokenizer.media_start_id  # ids below the special block are plain BPE tokens
    return torch.randint(0, vocab, (1, length), generator=gen)


# --- the language model alone -----------------------------------------------------------------


def test_fused_layout_matches_transformers(plain: Any, checkpoint: Path) -> None:
    """Expert 2 of layer 1: its gate/up/down rows sit where transformers' expert kernel reads them."""
    t = read_official_tensors(checkpoint, ("language_model.model.layers.1.mlp.experts.2.",))
    experts = plain.model.layers[1].mlp.experts
    inter = experts.intermediate_dim
    base = "language_model.model.layers.1.mlp.experts.2"
    assert torch.equal(experts.gate_up_proj[2, :inter], t[f"{base}.gate_proj.weight"])
    assert torch.equal(experts.gate_up_proj[2, inter:], t[f"{base}.up_proj.weight"])
    assert torch.equal(experts.down_proj[2], t[f"{base}.down_proj.weight"])


def test_native_weights_equal_plain(native: LoadedModel, plain: Any) -> None:
    """Every language-model parameter and buffer of the native load equals the hand-built one."""
    native_state = {k.removeprefix("model.language_model."): v
                    for k, v in native.model.state_dict().items() if k.startswith("model.language_model.")}
    plain_state = {k.removeprefix("model."): v for k, v in plain.state_dict().items() if k.startswith("model.")}
    assert sorted(native_state) == sorted(plain_state)
    for name, value in plain_state.items():
        assert torch.equal(native_state[name], value), name
    assert torch.equal(native.model.lm_head.weight, plain.lm_head.weight)


@pytest.mark.parametrize(("length", "seed"), [(1, 0), (7, 1), (33, 2)])
def test_prefill_logits_equal(native: LoadedModel, plain: Any, length: int, seed: int) -> None:
    """Text-only prefill: the same logits at every position."""
    ids = prompt_ids(native, length, seed)
    with torch.no_grad():
        got = native.model(input_ids=ids).logits
        want = plain(input_ids=ids).logits
    assert_close(got, want)


def test_decode_with_cache_equal(native: LoadedModel, plain: Any) -> None:
    """Prefill then four greedy steps through the KV cache: both models agree at every step."""
    ids = prompt_ids(native, 9, seed=4)
    with torch.no_grad():
        got = native.model(input_ids=ids, use_cache=True)
        want = plain(input_ids=ids, use_cache=True)
        steps = [ids]
        for _ in range(4):
            assert_close(got.logits[:, -1], want.logits[:, -1])
            token = got.logits[:, -1].argmax(-1, keepdim=True)
            steps.append(token)
            got = native.model(input_ids=token, use_cache=True, **cache_kwarg(native.model, output_cache(got)))
            want = plain(input_ids=token, use_cache=True, **cache_kwarg(plain, output_cache(want)))
        assert_close(got.logits[:, -1], want.logits[:, -1])
        # The cached path also equals one uncached pass over the whole sequence.
        full = native.model(input_ids=torch.cat(steps, dim=1)).logits[:, -1]
    assert_close(got.logits[:, -1], full, rtol=1e-4)


def test_batch_with_padding_equal(native: LoadedModel, plain: Any) -> None:
    """Two left-padded prompts with an attention mask: same logits on the real positions."""
    a, b = prompt_ids(native, 10, seed=5), prompt_ids(native, 6, seed=6)
    pad = native.model.config.text_config.pad_token_id
    ids = torch.cat([a, torch.cat([torch.full((1, 4), pad), b], dim=1)])
    mask = (torch.arange(10)[None, :] >= torch.tensor([[0], [4]])).long()
    with torch.no_grad():
        got = native.model(input_ids=ids, attention_mask=mask).logits
        want = plain(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert_close(got[real], want[real])


# --- image features in the placeholder positions ---------------------------------------------


def image_prompt(native: LoadedModel, counts: list[int]) -> torch.Tensor:
    """`text <|media_start|> pad*n <|media_end|> text ...` for each image, batch of one."""
    tok = native.tokenizer
    ids: list[int] = [11, 12]
    for n in counts:
        ids += [tok.media_start_id, tok.media_content_id, *[tok.media_pad_id] * n, tok.media_end_id, 13]
    return torch.tensor([ids])


def test_image_features_fill_placeholders_in_order(native: LoadedModel, plain: Any, checkpoint: Path) -> None:
    """Placeholder rows of inputs_embeds = reference projector outputs (image 1 then 2); others = embeddings."""
    grids = torch.tensor([[4, 6], [6, 8]])
    pixels = torch.randn(int(grids.prod(-1).sum()), 3, 14, 14, generator=torch.Generator().manual_seed(7))
    features = torch.cat(ReferenceMoonViT.from_checkpoint(checkpoint)(pixels, grids))
    ids = image_prompt(native, [6, 12])
    captured: dict[str, torch.Tensor] = {}

    def grab(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    thw = torch.cat([torch.ones(2, 1, dtype=torch.long), grids], dim=1)
    handle = native.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = native.model(input_ids=ids, pixel_values=pixels, image_grid_thw=thw).logits
    finally:
        handle.remove()
    embeds, is_pad = captured["embeds"][0], ids[0] == native.tokenizer.media_pad_id
    assert_close(embeds[is_pad], features, rtol=1e-5)
    table = read_official_tensors(checkpoint, ("language_model.model.embed_tokens.",))
    assert torch.equal(embeds[~is_pad], table["language_model.model.embed_tokens.weight"][ids[0][~is_pad]])
    expected = table["language_model.model.embed_tokens.weight"][ids[0]]
    expected[is_pad] = features
    with torch.no_grad():
        assert_close(logits, plain(inputs_embeds=expected[None]).logits)
