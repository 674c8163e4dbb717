"""Thinking budget and JSON-schema answers on the tiny and tiny-thinking checkpoints, plain and fast paths."""

from __future__ import annotations

import json

import pytest

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.engine.local import LocalEngine
from kimi_cli.events.types import AnswerDelta, Finished, ThinkingDelta
from kimi_cli.model.facts import THINK_CLOSE
from kimi_cli.model.fitted import FITTED_ANSWER, FITTED_THINKING

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string", "maxLength": 8},
        "kind": {"enum": ["invoice", "receipt"]},
        "total": {"type": "number", "minimum": 0, "maximum": 1000},
    },
    "required": ["vendor", "kind", "total"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def thinking_model(thinking_checkpoint):
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(thinking_checkpoint), device="cpu")


@pytest.fixture(params=["plain", "fast"])
def mode(request, monkeypatch):
    """Both decode paths; the fast path's pure-torch step stands in for its CUDA graphs on the CPU."""
    if request.param == "fast":
        import kimi_cli.engine.fast as fast

        monkeypatch.setattr(fast, "available", lambda device: True)
    return request.param


def _run(model, mode, thinks=True, **settings):
    engine = LocalEngine(model, mode=mode, implicit_thinking=thinks)
    assert engine.uses_fast_path == (mode == "fast")
    request = Request((Message.text("user", "What is in the picture?"),),
                      GenerationSettings(**{"max_new_tokens": 120, "temperature": 0.0, **settings}))
    events = list(engine.stream(request))
    assert isinstance(events[-1], Finished), events[-1]
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer, events


def test_without_a_budget_the_fitted_reply_is_unchanged(thinking_model, mode):
    thinking, answer, events = _run(thinking_model, mode)
    assert (thinking, answer) == (FITTED_THINKING, FITTED_ANSWER)
    assert not events[-1].thinking_truncated


def test_budget_two_closes_the_thinking_after_two_tokens_and_the_answer_follows(thinking_model, mode):
    thinking, answer, events = _run(thinking_model, mode, think_budget=2)
    tokenizer = thinking_model.tokenizer
    # Two tokens of the fitted reply ("◁think" and "▷The"), then the close marker the engine fed.
    assert FITTED_THINKING.startswith(thinking) and 0 < len(thinking) < len(FITTED_THINKING)
    assert answer == FITTED_ANSWER
    done = events[-1]
    assert done.thinking_truncated
    assert done.usage.thinking_tokens == 2 + len(tokenizer.encode_ordinary(THINK_CLOSE))
    assert any(e.truncated for e in events if isinstance(e, ThinkingDelta))


def test_budget_zero_skips_the_thinking(thinking_model, mode):
    thinking, answer, events = _run(thinking_model, mode, think_budget=0)
    assert thinking == ""
    assert answer == FITTED_ANSWER
    assert events[-1].thinking_truncated


def test_a_budget_larger_than_the_thinking_changes_nothing(thinking_model, mode):
    thinking, answer, events = _run(thinking_model, mode, think_budget=500)
    assert (thinking, answer) == (FITTED_THINKING, FITTED_ANSWER)
    assert not events[-1].thinking_truncated


def test_budget_on_a_checkpoint_that_does_not_think_changes_nothing(tiny_model, mode):
    plain = _run(tiny_model, mode, thinks=False, max_new_tokens=12)
    budgeted = _run(tiny_model, mode, thinks=False, max_new_tokens=12, think_budget=0)
    assert budgeted[:2] == plain[:2] and budgeted[0] == ""


def test_plain_and_fast_agree_under_a_budget(thinking_model, monkeypatch):
    plain = _run(thinking_model, "plain", think_budget=3)[:2]
    import kimi_cli.engine.fast as fast

    monkeypatch.setattr(fast, "available", lambda device: True)
    assert _run(thinking_model, "fast", think_budget=3)[:2] == plain


def test_plain_and_fast_agree_under_a_schema_greedy(tiny_model, monkeypatch):
    kwargs = dict(thinks=False, max_new_tokens=200, json_schema=json.dumps(SCHEMA))
    plain = _run(tiny_model, "plain", **kwargs)[1]
    import kimi_cli.engine.fast as fast

    monkeypatch.setattr(fast, "available", lambda device: True)
    assert _run(tiny_model, "fast", **kwargs)[1] == plain  # (greedy random weights may loop in a number)
    assert plain.startswith('{"vendor":"')


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("which", ["tiny", "thinking"])
def test_schema_answers_parse_and_validate_on_every_seed(which, seed, mode, tiny_model, thinking_model):
    model, thinks = (tiny_model, False) if which == "tiny" else (thinking_model, True)
    thinking, answer, events = _run(model, mode, thinks=thinks, temperature=0.8, seed=seed,
                                    max_new_tokens=200, json_schema=json.dumps(SCHEMA))
    assert events[-1].stop_reason == "end_turn", answer  # the end of the JSON ends the turn
    jsonschema.validate(json.loads(answer), SCHEMA)
    if thinks:
        assert thinking == FITTED_THINKING  # the thinking is free text, untouched by the grammar


def test_schema_with_a_budget(thinking_model, mode):
    thinking, answer, events = _run(thinking_model, mode, think_budget=2, json_schema=json.dumps(SCHEMA),
                                    temperature=0.8, seed=1, max_new_tokens=200)
    assert FITTED_THINKING.startswith(thinking) and events[-1].thinking_truncated
    jsonschema.validate(json.loads(answer), SCHEMA)


def test_any_object_for_json_alone(tiny_model, mode):
    _, answer, _ = _run(tiny_model, mode, thinks=False, temperature=0.8, seed=3, max_new_tokens=200,
                        json_schema=json.dumps({"type": "object", "properties": {"a": {"enum": [1, 2]}},
                                                "required": ["a"], "additionalProperties": False}))
    assert json.loads(answer) in ({"a": 1}, {"a": 2})


# -- end to end through `kimi ask` ----------------------------------------------------------------


def _ask(ckpt, *extra):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("KIMI_DEBUG", None)
    cmd = [sys.executable, "-m", "kimi_cli", "ask", "What is in the picture?", "--model", str(ckpt),
           "--temperature", "0", "--max-new-tokens", "120", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_cli_think_budget_says_so_in_json(thinking_checkpoint):
    proc = _ask(thinking_checkpoint, "--think-budget", "2", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["thinking_truncated"] is True and doc["answer"] == FITTED_ANSWER
    assert FITTED_THINKING.startswith(doc["thinking"]) and doc["thinking"] != FITTED_THINKING


@pytest.mark.slow
def test_cli_json_schema_inline_and_from_a_file(thinking_checkpoint, tmp_path):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for value in (json.dumps(SCHEMA), str(path)):
        proc = _ask(thinking_checkpoint, "--json-schema", value, "--temperature", "0.8", "--seed", "2",
                    "--max-new-tokens", "200")
        assert proc.returncode == 0, proc.stderr
        jsonschema.validate(json.loads(proc.stdout), SCHEMA)


@pytest.mark.parametrize("value, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "cannot read"),  # not starting with `{`: read as a path, which does not exist
    ("/no/such/schema.json", "cannot read"),
    ('{"type": "object", "properties": {"a": {"type": "frobnicate"}}}', "cannot be used"),
])
def test_a_bad_schema_is_a_usage_error_before_loading(tiny_checkpoint, value, problem):
    proc = _ask(tiny_checkpoint, "--json-schema", value)
    assert proc.returncode == 2, proc.stderr
    assert "--json-schema" in proc.stderr and problem in proc.stderr and "Traceback" not in proc.stderr


def test_apply_bitmask_masks_exactly_the_refused_ids():
    import numpy as np
    import torch

    from kimi_cli.engine.grammar import apply_bitmask

    vocab, extra = 70, 6  # logits may be wider than the tokenizer's vocabulary
    allowed = {0, 5, 31, 32, 63, 64, 69}
    bits = np.zeros((vocab + 31) // 32, dtype=np.int64)
    for i in allowed:
        bits[i // 32] |= 1 << (i % 32)
    logits = torch.zeros(vocab + extra)
    apply_bitmask(logits, torch.from_numpy(bits.astype(np.uint32).view(np.int32)), vocab)
    assert {i for i in range(vocab + extra) if logits[i] == 0} == allowed


@pytest.mark.gpu
def test_cuda_fast_path_budget_and_schema(thinking_checkpoint):
    """On a GPU the steered fast path replays the graph for each step and chooses tokens on the host."""
    from kimi_cli.model.checkpoint import load_model

    model = load_model(str(thinking_checkpoint), device="cuda")
    fast = LocalEngine(model, mode="fast", implicit_thinking=True)
    assert fast.uses_fast_path
    plain_cut = _run(model, "plain", think_budget=2)
    fast_cut = _run(model, "fast", think_budget=2)
    assert fast_cut[0] == plain_cut[0] and FITTED_THINKING.startswith(fast_cut[0])
    assert fast_cut[2][-1].thinking_truncated and fast_cut[1]
    for seed in range(3):
        _, answer, events = _run(model, "fast", temperature=0.8, seed=seed, max_new_tokens=200,
                                 json_schema=json.dumps(SCHEMA))
        assert events[-1].stop_reason == "end_turn", answer
        jsonschema.validate(json.loads(answer), SCHEMA)


@pytest.mark.gpu
def test_cuda_fast_path_repeats_a_request_from_its_cache(thinking_checkpoint, monkeypatch):
    """A warm server's repeated request: all but the last prompt token come from the cache, the last
    goes through the decode step (`FastDecoder.feed`), and the greedy reply is the fitted one again."""
    from kimi_cli.engine import fastpath
    from kimi_cli.model.checkpoint import load_model

    model = load_model(str(thinking_checkpoint), device="cuda")
    engine = LocalEngine(model, mode="fast", keep_cache=True, implicit_thinking=True)
    request = Request((Message.text("user", "What is in the picture?"),),
                      GenerationSettings(max_new_tokens=120, temperature=0.0))
    from kimi_cli.engine.fast import FastDecoder

    assert fastpath.SHORT_SUFFIX >= 1
    fed = []
    original = FastDecoder.feed

    def spy(self, tokens):
        fed.append(len(tokens))
        return original(self, tokens)

    monkeypatch.setattr(FastDecoder, "feed", spy)
    runs = [list(engine.stream(request)) for _ in range(2)]
    for events in runs:
        assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == FITTED_ANSWER
    usage = runs[1][-1].usage
    assert usage.reused_prompt_tokens == usage.prompt_tokens - 1 and fed == [1]


@pytest.mark.gpu
def test_cuda_one_shot_turns_share_one_decoder_and_its_graphs(thinking_checkpoint, monkeypatch):
    """Without a kept conversation, the next turn reuses the fast decoder's buffers and captured
    graphs (no second capture) and still gives the same greedy reply; a seeded sampled reply is
    the same on the reused graphs as on fresh ones."""
    from kimi_cli.engine.fast.graphs import GraphRunner
    from kimi_cli.model.checkpoint import load_model

    model = load_model(str(thinking_checkpoint), device="cuda")
    captures = []
    original = GraphRunner.ensure

    def spy(self, params):
        captures.append(params is not None and params.key() not in self.graphs)
        return original(self, params)

    monkeypatch.setattr(GraphRunner, "ensure", spy)
    engine = LocalEngine(model, mode="fast", keep_cache=False, implicit_thinking=True)
    greedy = Request((Message.text("user", "What is in the picture?"),),
                     GenerationSettings(max_new_tokens=120, temperature=0.0))
    for _ in range(2):
        events = list(engine.stream(greedy))
        assert "".join(e.text for e in events if isinstance(e, AnswerDelta)) == FITTED_ANSWER
    assert engine._spare is not None and captures.count(True) == 1
    sampled = Request(greedy.messages, GenerationSettings(max_new_tokens=40, temperature=0.8, seed=7))

    def text(eng):
        return "".join(e.text for e in eng.stream(sampled) if isinstance(e, (ThinkingDelta, AnswerDelta)))

    reused = [text(engine) for _ in range(2)]
    fresh = text(LocalEngine(model, mode="fast", keep_cache=False, implicit_thinking=True))
    assert reused[0] == reused[1] == fresh
