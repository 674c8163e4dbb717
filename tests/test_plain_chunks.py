"""The plain path's prefill in pieces: the same logits as one forward, for text and image prompts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from kimi_cli.engine.plain import PlainDecoder, prefill_pieces


def test_pieces_keep_images_whole_and_chunk_the_text(monkeypatch):
    import kimi_cli.model.memory as memory

    monkeypatch.setattr(memory, "PREFILL_CHUNK", 4)
    pv = object()
    pieces = prefill_pieces(list(range(14)), [(2, 6)], pv, "grid")
    assert [p[0] for p in pieces] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13]]
    assert pieces[0][1] is pv and pieces[1][1] is None
    assert [p[0] for p in prefill_pieces(list(range(5)), [], None, None)] == [[0, 1, 2, 3], [4]]


@pytest.mark.parametrize("with_image", [False, True])
def test_chunked_prefill_gives_the_same_logits(tiny_model, monkeypatch, with_image):
    import kimi_cli.model.memory as memory
    from kimi_cli.conversation import Message
    from kimi_cli.media.types import ImagePart, TextPart
    from kimi_cli.model.prompt import build_prompt

    parts = (ImagePart(Image.new("RGB", (56, 42), "teal"), source="x.png"),) if with_image else ()
    text = "Describe the picture in great detail, please, and then list every colour you can see."
    message = Message("user", (*parts, TextPart(text)))
    prompt = build_prompt((message,), tiny_model.tokenizer, tiny_model.processor_config, None)
    with torch.inference_mode():
        whole = PlainDecoder(tiny_model).prefill(prompt)
        monkeypatch.setattr(memory, "PREFILL_CHUNK", 7)
        chunked = PlainDecoder(tiny_model).prefill(prompt)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
