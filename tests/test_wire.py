"""kimi messages <-> OpenAI content parts: the server rebuilds exactly the prompt the client would build."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image

from kimi_cli.conversation import Message
from kimi_cli.engine.wire import WireError, decode_data_url, messages_to_openai, openai_to_messages
from kimi_cli.media.types import ImagePart, TextPart
from kimi_cli.model.image_processor import ProcessorConfig

LIMITS = {"max_images": 8, "max_pixels": 10_000_000}


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _conversation() -> tuple[Message, ...]:
    page = ImagePart(_photo(700, 500, 1), "report.pdf#3", max_tokens=64)  # the planner's budget shrinks it
    frame = ImagePart(_photo(300, 200, 2), "clip.mp4@5")  # fits as it is
    return (
        Message.text("user", "Earlier question"),
        Message.text("assistant", "Earlier answer"),
        Message("user", (TextPart("Page 3 of 12:"), page, TextPart("[00:00:05]"), frame, TextPart("Compare them."))),
    )


def test_round_trip_gives_the_same_prompt(tiny_checkpoint):
    from kimi_cli.model.prompt import build_prompt
    from kimi_cli.model.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_checkpoint)
    cfg = ProcessorConfig.from_file(tiny_checkpoint / "preprocessor_config.json")
    local = _conversation()
    wire = messages_to_openai(local, "Be brief.", cfg)
    assert wire[0] == {"role": "system", "content": "Be brief."}
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,")
               for p in wire[-1]["content"] if p["type"] == "image_url")
    served = openai_to_messages(wire, **LIMITS)
    mine = build_prompt(local, tokenizer, cfg, "Be brief.")
    theirs = build_prompt(served, tokenizer, cfg, None)
    assert mine.input_ids == theirs.input_ids
    assert mine.image_tokens == theirs.image_tokens
    assert all(np.array_equal(a, b) for a, b in zip(mine.canvases, theirs.canvases, strict=True))


def test_text_only_messages_are_plain_strings():
    wire = messages_to_openai((Message("user", (TextPart("a"), TextPart("b"))),))
    assert wire == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize(("messages", "code", "status"), [
    ([], "invalid_messages", 422),
    ([{"role": "robot", "content": "hi"}], "invalid_messages", 422),
    ([{"role": "user", "content": 5}], "invalid_messages", 422),
    ([{"role": "user", "content": [{"type": "audio", "data": "x"}]}], "invalid_content", 422),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}],
     "invalid_image_url", 400),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
     "invalid_image_url", 400),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}],
     "invalid_base64", 400),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                       + base64.b64encode(b"GIF89a junk").decode()}}]}],
     "invalid_image", 400),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "invalid_messages", 422),
])
def test_bad_messages_are_refused(messages, code, status):
    with pytest.raises(WireError) as info:
        openai_to_messages(messages, **LIMITS)
    assert (info.value.code, info.value.status) == (code, status)


def test_image_count_is_checked_before_decoding():
    url = "data:image/png;base64," + base64.b64encode(b"not decoded").decode()
    parts = [{"type": "image_url", "image_url": {"url": url}}] * 3
    with pytest.raises(WireError) as info:
        openai_to_messages([{"role": "user", "content": parts}], max_images=2, max_pixels=100)
    assert info.value.code == "too_many_images"


def test_pixel_limit_is_checked_before_decoding():
    wire = messages_to_openai((Message("user", (ImagePart(_photo(200, 200), "x"),)),))
    with pytest.raises(WireError) as info:
        openai_to_messages(wire, max_images=2, max_pixels=100 * 100)
    assert (info.value.status, info.value.code) == (413, "image_too_large")


def test_data_url_with_line_breaks_and_parameters():
    payload = base64.encodebytes(b"hello world, this is long enough to wrap" * 3).decode()
    assert decode_data_url("data:image/jpeg;name=a.jpg;base64," + payload, "x").startswith(b"hello world")
