"""Tests for kimi_cli.model.fitted: the `tiny-thinking` checkpoint and real markers streamed end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.events.types import AnswerDelta, Event, Finished, ThinkingDelta
from kimi_cli.media.types import ImagePart, TextPart
from kimi_cli.model.facts import GENERATION_PROMPT, THINK_CLOSE, THINK_OPEN
from kimi_cli.model.fitted import (
    FITTED_ANSWER,
    FITTED_REPLY,
    FITTED_THINKING,
    build_examples,
    official_language_tensors,
    write_thinking_checkpoint,
)
from kimi_cli.model.synthetic import get_preset, tensor_shapes

SEED = 0


@pytest.fixture(scope="module")
def fitted_checkpoint(thinking_checkpoint) -> Path:
    """`kimi synth --preset tiny-thinking` with seed 0 (built once per session by conftest)."""
    assert SEED == 0
    return thinking_checkpoint


def test_fit_reports_progress_and_restores_the_thread_count(tiny_checkpoint):
    import torch

    from kimi_cli.model.checkpoint import load_model
    from kimi_cli.model.fitted import fit_reply

    loaded = load_model(str(tiny_checkpoint), device="cpu", dtype="float32")
    seen: list[tuple[int, int, int]] = []
    before = torch.get_num_threads()
    fit_reply(loaded, steps=3, progress=lambda done, total: seen.append((done, total, torch.get_num_threads())))
    assert seen == [(1, 3, 1), (2, 3, 1), (3, 3, 1)]
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_fitted_weights_do_not_depend_on_the_callers_thread_count(tmp_path, fitted_checkpoint):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        other = write_thinking_checkpoint(tmp_path / "two-threads", seed=SEED)
    finally:
        torch.set_num_threads(before)
    name = "model-00001-of-00001.safetensors"
    assert (other / name).read_bytes() == (fitted_checkpoint / name).read_bytes()


@pytest.fixture(scope="module")
def fitted_model(fitted_checkpoint):
    """The fitted checkpoint through the public loader, at the checkpoint's own dtype."""
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(fitted_checkpoint), device="cpu")


def _stored_tensors(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    out: dict = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(load_file(str(ckpt / shard)))
    assert set(out) == set(index["weight_map"])
    return out


def _picture() -> Image.Image:
    img = Image.new("RGB", (90, 60), "teal")
    ImageDraw.Draw(img).rectangle((10, 10, 40, 30), fill="white")
    return img


def _stream(
    model,
    messages: tuple[Message, ...],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[Event]:
    from kimi_cli.engine.local import LocalEngine

    settings = GenerationSettings(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    return list(LocalEngine(model).stream(Request(messages=messages, settings=settings)))


def _texts(events: list[Event]) -> tuple[list[str], list[str]]:
    thinking = [e.text for e in events if isinstance(e, ThinkingDelta)]
    answer = [e.text for e in events if isinstance(e, AnswerDelta)]
    return thinking, answer


TEXT_ONLY = (Message.text("user", "Tell me a joke about penguins."),)
WITH_IMAGE = (
    Message(role="user", parts=(ImagePart(_picture(), source="pic.png"), TextPart("What is this?"))),
)


def test_layout_is_official(fitted_checkpoint):
    p = get_preset("tiny")
    stored = _stored_tensors(fitted_checkpoint)
    assert {name: tuple(t.shape) for name, t in stored.items()} == dict(tensor_shapes(p.text, p.vision))
    for name in (
        "config.json",
        "tiktoken.model",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
        "chat_template.jinja",
    ):
        assert (fitted_checkpoint / name).is_file(), name
    assert "fitted" in (fitted_checkpoint / "README.md").read_text()
    assert json.loads((fitted_checkpoint / "config.json").read_text())["model_type"] == "kimi_vl"


def test_vision_frozen_language_fitted(fitted_checkpoint, tiny_checkpoint):
    # The session's `tiny` checkpoint is what the fit started from (same preset and seed).
    fitted, tiny = _stored_tensors(fitted_checkpoint), _stored_tensors(tiny_checkpoint)
    changed = {name for name, t in fitted.items() if not bool((t == tiny[name]).all())}
    assert all(name.startswith("language_model.") for name in changed)
    assert {"language_model.lm_head.weight", "language_model.model.embed_tokens.weight"} <= changed


def test_expert_split_round_trips(fitted_checkpoint, fitted_model):
    """File -> loader (experts fused) -> `official_language_tensors` gives the file back exactly."""
    stored = _stored_tensors(fitted_checkpoint)
    back = official_language_tensors(fitted_model.model, get_preset("tiny").text)
    assert set(back) == {n for n in stored if n.startswith("language_model.")}
    for name, t in back.items():
        assert bool((t == stored[name]).all()), name


def test_training_labels_cover_only_the_reply(fitted_model):
    tok = fitted_model.tokenizer
    reply = tok.encode(FITTED_REPLY) + [tok.im_end_id]
    gen_prompt = tok.encode(GENERATION_PROMPT)
    examples = build_examples(tok, fitted_model.processor_config)
    assert any(e.pixel_values is not None for e in examples)
    assert any(e.pixel_values is None for e in examples)
    for e in examples:
        prompt_len = len(e.input_ids) - len(reply)
        assert e.input_ids[prompt_len:] == reply
        assert e.labels == [-100] * prompt_len + reply
        assert e.input_ids[prompt_len - len(gen_prompt) : prompt_len] == gen_prompt


def test_markers_are_several_tokens(fitted_model):
    tok = fitted_model.tokenizer
    assert len(tok.encode(THINK_OPEN)) > 1
    assert len(tok.encode(THINK_CLOSE)) > 1


def test_reply_tokens_are_distinct(fitted_model):
    # What makes the fit hold on long prompts (see fitted.py): every reply token names the next.
    ids = fitted_model.tokenizer.encode(FITTED_REPLY)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("messages", [TEXT_ONLY, WITH_IMAGE], ids=["text", "image"])
def test_greedy_reply_streams_split_markers(fitted_model, messages):
    events = _stream(fitted_model, messages)
    thinking, answer = _texts(events)
    assert "".join(thinking) == FITTED_THINKING
    assert "".join(answer) == FITTED_ANSWER
    # One delta per token: the markers reached the splitter in pieces and never leaked out.
    assert len(thinking) > 5 and len(answer) > 1
    assert not any("◁" in t or "▷" in t for t in thinking + answer)
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.stop_reason == "end_turn"
    assert (finished.usage.image_tokens > 0) == (messages is WITH_IMAGE)
    assert finished.usage.generated_tokens == len(fitted_model.tokenizer.encode(FITTED_REPLY)) + 1


def test_sampling_at_recommended_temperature(fitted_model):
    for seed in (0, 1):
        thinking, answer = _texts(_stream(fitted_model, WITH_IMAGE, temperature=0.8, seed=seed))
        assert ("".join(thinking), "".join(answer)) == (FITTED_THINKING, FITTED_ANSWER)


def test_cut_off_inside_thinking(fitted_model):
    events = _stream(fitted_model, TEXT_ONLY, max_new_tokens=6)
    thinking, answer = _texts(events)
    assert answer == []
    text = "".join(thinking)
    assert text and FITTED_THINKING.startswith(text) and text != FITTED_THINKING
    assert isinstance(events[-1], Finished) and events[-1].stop_reason == "max_tokens"
