"""The fast path's vision call: the attention's sequence bounds handed over on the host give the same
features as transformers' own (computed from the device grid), for one image and for several."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kimi_cli.engine import fastpath


def _prompt(loaded, sizes):
    from kimi_cli.bench.ttft import QUESTION
    from kimi_cli.conversation import Message
    from kimi_cli.media.types import ImagePart, TextPart
    from kimi_cli.model.prompt import build_prompt

    parts = [ImagePart(Image.radial_gradient("L").resize(size).convert("RGB"), f"{i}.png")
             for i, size in enumerate(sizes)]
    return build_prompt([Message("user", (*parts, TextPart(QUESTION)))], loaded.tokenizer,
                        loaded.processor_config)


@pytest.mark.parametrize("sizes", [[(448, 448)], [(448, 300), (200, 520), (64, 64)]])
def test_host_bounds_give_transformers_features(tiny_model, sizes, monkeypatch):
    from kimi_cli.engine.plain import prompt_keys, suffix_grid, suffix_images

    prompt = _prompt(tiny_model, sizes)
    _, runs, _ = prompt_keys(prompt, tiny_model.tokenizer.media_pad_id, keyed=False)
    pv, grid = suffix_images(prompt, runs, 0, "cpu", tiny_model.model.dtype)
    host = suffix_grid(prompt, runs, 0)
    assert np.array_equal(host, grid.numpy())
    seen = []
    attn = tiny_model.model.model.vision_tower.layers[0].attn
    hook = attn.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["cu_seqlens"]), with_kwargs=True)
    given = []
    tower = tiny_model.model.model.vision_tower
    tower_hook = tower.register_forward_pre_hook(lambda m, a, kw: given.append(dict(kw)), with_kwargs=True)
    made = []
    real = fastpath.host_cu_seqlens
    monkeypatch.setattr(fastpath, "host_cu_seqlens", lambda g: made.append(real(g)) or made[-1])
    try:
        with torch.inference_mode():
            theirs = fastpath.image_features(tiny_model.model, pv, grid)
            ours = fastpath.image_features(tiny_model.model, pv, grid, host)
    finally:
        hook.remove()
        tower_hook.remove()
    assert torch.equal(ours, theirs)
    # the second call handed the tower its merge index (nothing left to read back after the layers)
    assert "temporal_merge_index" not in given[0] and given[1]["temporal_merge_index"][2] == ours.shape[0]
    # transformers computed its own bounds the first time and took ours (the same values) the second
    assert len(made) == 1 and seen[1] is made[0] and torch.equal(seen[0].cpu(), made[0])
    assert made[0].tolist() == [0, *np.cumsum(host.prod(axis=1)).tolist()]


@pytest.mark.parametrize("skip_first_image", [False, True])
def test_prompt_embeddings_place_features_as_masked_scatter_does(tiny_model, skip_first_image):
    """Features go onto each image's run of pads in order, from positions known on the host: the same
    embeddings as transformers' way (its projector's split per image, then `masked_scatter`)."""
    from kimi_cli.engine.plain import prompt_keys, suffix_images

    prompt = _prompt(tiny_model, [(448, 300), (200, 520), (64, 64)])
    pad = tiny_model.tokenizer.media_pad_id
    ids, runs, _ = prompt_keys(prompt, pad, keyed=False)
    keep = runs[0][1] + 1 if skip_first_image else 0  # a cached prefix holding the first image
    model = tiny_model.model
    with torch.inference_mode():
        ours = fastpath.prompt_embeddings(tiny_model, prompt, ids, runs, keep)
        suffix = torch.tensor([ids[keep:]])
        pv, grid = suffix_images(prompt, runs, keep, "cpu", model.dtype)
        features = torch.cat(list(model.model.get_image_features(pv, grid).pooler_output))
        theirs = model.get_input_embeddings()(suffix).masked_scatter((suffix == pad).unsqueeze(-1), features)
    assert ours.shape == theirs.shape == (1, len(ids) - keep, model.config.text_config.hidden_size)
    assert torch.equal(ours, theirs)


@pytest.mark.gpu
def test_host_bounds_on_the_gpu(tiny_checkpoint):
    """On a GPU the handed-over bounds and merge index land where the tower needs them (its device)."""
    from kimi_cli.engine.plain import prompt_keys, suffix_grid, suffix_images
    from kimi_cli.model.checkpoint import load_model

    loaded = load_model(str(tiny_checkpoint), device="cuda")
    prompt = _prompt(loaded, [(448, 300), (200, 520)])
    _, runs, _ = prompt_keys(prompt, loaded.tokenizer.media_pad_id, keyed=False)
    pv, grid = suffix_images(prompt, runs, 0, "cuda", loaded.model.dtype)
    with torch.inference_mode():
        theirs = fastpath.image_features(loaded.model, pv, grid)
        ours = fastpath.image_features(loaded.model, pv, grid, suffix_grid(prompt, runs, 0))
    assert ours.is_cuda and torch.equal(ours, theirs)
