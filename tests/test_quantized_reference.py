"""The reference path of every weight format on the CPU: quantize while loading, dequantize, plain forward."""

from __future__ import annotations

import pytest
import torch

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.events.types import AnswerDelta, ThinkingDelta
from kimi_cli.model.fitted import FITTED_ANSWER, FITTED_THINKING
from kimi_cli.model.quantized import QuantExperts, QuantLinear, quantized_bytes

QUESTION = (Message.text("user", "What is in this picture?"),)


def _load(ckpt, fmt: str):
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(ckpt), device="cpu", quantize=fmt)


def _reply(loaded) -> tuple[str, str]:
    from kimi_cli.engine.local import LocalEngine

    settings = GenerationSettings(temperature=0.0, max_new_tokens=64)
    events = list(LocalEngine(loaded, mode="plain").stream(Request(messages=QUESTION, settings=settings)))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer


@pytest.fixture(scope="module")
def bf16_reply(thinking_checkpoint):
    return _reply(_load(thinking_checkpoint, "bf16"))


def test_the_unconverted_checkpoint_gives_the_fitted_reply(bf16_reply):
    assert bf16_reply == (FITTED_THINKING, FITTED_ANSWER)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_int8_and_fp8_reproduce_the_greedy_reply_exactly(thinking_checkpoint, bf16_reply, fmt):
    loaded = _load(thinking_checkpoint, fmt)
    assert loaded.weight_format == fmt
    assert any("kimi quantize" in note for note in loaded.notes)
    assert _reply(loaded) == bf16_reply


def test_int4_keeps_thinking_then_answer(thinking_checkpoint):
    thinking, answer = _reply(_load(thinking_checkpoint, "int4"))
    assert thinking.strip() and answer.strip()


@pytest.mark.parametrize("fmt", ["int8", "fp8", "int4"])
def test_converted_modules_hold_only_quantized_bytes(thinking_checkpoint, fmt):
    loaded = _load(thinking_checkpoint, fmt)
    lm = loaded.model.model.language_model
    layer = lm.layers[1]
    assert isinstance(layer.self_attn.q_proj, QuantLinear) and isinstance(layer.mlp.experts, QuantExperts)
    assert isinstance(layer.mlp.shared_experts.down_proj, QuantLinear)
    # what stays in the checkpoint's dtype: vision, projector, embeddings, norms, router
    assert layer.mlp.gate.weight.dtype == torch.float32
    # lm_head: int8 with a scale per row in every quantized format, within int8's rounding of bf16's
    head = loaded.model.lm_head
    assert isinstance(head, QuantLinear) and head.fmt.name == "int8" and head.weight.dtype == torch.int8
    want = _load(thinking_checkpoint, "bf16").model.lm_head.weight.float()
    step = want.abs().amax(-1, keepdim=True) / 127
    assert ((head.dequantized(torch.float32) - want).abs() <= step / 2 + 1e-6).all()
    assert isinstance(loaded.model.model.vision_tower.layers[0].mlp.fc1, torch.nn.Linear)
    stored = {b.dtype for b in layer.self_attn.q_proj.buffers()}
    assert stored & {torch.int8, torch.float8_e4m3fn, torch.uint8}
    assert quantized_bytes(loaded.model) > 0


def test_unconverted_tensors_match_the_transformers_loader(thinking_checkpoint):
    """Everything the quantizing loader keeps is loaded exactly as the bf16 loader loads it (which
    loads exactly what transformers' `from_pretrained` gives: tests/test_fast_load.py)."""
    ref = _load(thinking_checkpoint, "bf16").model.state_dict()
    quant = _load(thinking_checkpoint, "int8").model.state_dict()
    kept = [k for k in quant if k in ref]
    assert len(kept) > 40
    for key in kept:
        if quant[key].dtype == torch.int8:
            continue  # converted
        assert torch.equal(ref[key], quant[key]), key


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_grouped_prefill_experts_equal_the_one_at_a_time_path(tiny_checkpoint, fmt):
    """A prefill's grouped expert products compute the same sums as dequantizing each hit expert."""
    from kimi_cli.model import quantized
    from kimi_cli.model.checkpoint import load_model

    if quantized._GROUPED_MM is None:
        pytest.skip("this torch has no grouped matrix product")
    model = load_model(str(tiny_checkpoint), device="cpu", quantize=fmt).model
    experts = next(m for m in model.modules() if isinstance(m, quantized.QuantExperts))
    gen = torch.Generator().manual_seed(0)
    tokens = 3 * experts.num_experts
    hidden = torch.randn(tokens, experts.hidden_dim, generator=gen)
    index = torch.stack([torch.randperm(experts.num_experts, generator=gen)[:2] for _ in range(tokens)])
    weights = torch.rand(tokens, 2, generator=gen)
    grouped = experts(hidden, index, weights)
    assert grouped.shape == hidden.shape
    torch.testing.assert_close(grouped, experts._each_hit(hidden, index, weights), rtol=1e-4, atol=1e-5)
