"""The local engine on the tiny checkpoint: events, determinism, limits, cancellation, cache reuse."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.engine.local import LocalEngine
from kimi_cli.engine.plain import image_runs, reusable_prefix
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, ThinkingDelta
from kimi_cli.media.types import ImagePart, TextPart


def _request(text: str = "Describe it.", tokens: int = 12, seed: int | None = 0, temperature: float = 0.8,
             image: bool = True) -> Request:
    parts = (ImagePart(Image.new("RGB", (120, 90), (200, 30, 30)), "red.png"),) if image else ()
    settings = GenerationSettings(max_new_tokens=tokens, seed=seed, temperature=temperature)
    return Request(messages=(Message("user", (*parts, TextPart(text))),), settings=settings)


def _text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, (ThinkingDelta, AnswerDelta)))


def test_stream_ends_with_one_finished_event(tiny_model):
    events = list(LocalEngine(tiny_model).stream(_request()))
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and events[-1] is finished[0]
    done = finished[0]
    assert done.usage.generated_tokens == 12
    assert done.stop_reason == "max_tokens"
    assert done.usage.image_tokens > 0
    assert done.usage.prompt_tokens > done.usage.image_tokens
    assert done.timings.first_token_s is not None and done.timings.first_token_s > 0


def test_same_seed_same_text(tiny_model):
    engine = LocalEngine(tiny_model)
    first = _text(engine.stream(_request(seed=3)))
    second = _text(engine.stream(_request(seed=3)))
    assert first and first == second


def test_cancel_stops_generation(tiny_model):
    engine = LocalEngine(tiny_model)
    events = []
    for event in engine.stream(_request(tokens=5000, temperature=0)):
        events.append(event)
        if len(events) == 3:
            engine.cancel()
    assert events[-1].stop_reason == "cancelled"
    assert events[-1].usage.generated_tokens < 100


def test_cancel_from_another_thread(tiny_model):
    engine = LocalEngine(tiny_model)
    timer = threading.Timer(0.3, engine.cancel)
    timer.start()
    events = list(engine.stream(_request(tokens=100000, temperature=0)))
    timer.join()
    assert events[-1].stop_reason == "cancelled"


def test_generation_error_is_an_event(tiny_model):
    engine = LocalEngine(tiny_model)
    # A settings value the sampler cannot use fails inside the worker thread.
    bad = _request(temperature=float("nan"))
    events = list(engine.stream(bad))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].exit_code == 1
    assert events[-1].detail  # traceback kept for --debug


@pytest.mark.parametrize(
    ("cached", "ids", "pad", "expected"),
    [
        ([1, 2, 3, 4], [1, 2, 3, 4, 5], 9, 4),
        ([1, 2, 3, 4], [1, 2, 3, 4], 9, 3),  # at least one token is recomputed
        ([1, 2, 7], [1, 2, 3, 4], 9, 2),
        ([1, 9, 9, 9, 5], [1, 9, 9, 9, 6], 9, 4),
        ([1, 9, 9, 9, 5], [1, 9, 9, 9, 9, 6], 9, 1),  # never cut inside an image run
        ([], [1, 2], 9, 0),
    ],
)
def test_reusable_prefix(cached, ids, pad, expected):
    assert reusable_prefix(cached, ids, image_runs(ids, pad)) == expected


def test_cached_follow_up_equals_fresh_computation(tiny_model):
    """A second turn reusing the first turn's cache gives the same greedy tokens as a fresh run."""
    first = _request("What colour is it?", tokens=8, temperature=0)
    cached = LocalEngine(tiny_model, keep_cache=True)
    reply = _text(cached.stream(first))
    follow = Request(messages=(*first.messages, Message.text("assistant", reply), Message.text("user", "Why?")),
                     settings=first.settings)
    with_cache = list(cached.stream(follow))
    fresh = list(LocalEngine(tiny_model).stream(follow))
    assert isinstance(with_cache[-1], Finished) and isinstance(fresh[-1], Finished)
    assert _text(with_cache) and _text(with_cache) == _text(fresh)
    reused = with_cache[-1].usage.reused_prompt_tokens
    assert reused > with_cache[-1].usage.image_tokens  # the image and the first prompt came from cache
    assert fresh[-1].usage.reused_prompt_tokens == 0


def test_a_different_image_of_the_same_size_is_not_reused(tiny_model):
    """Same token ids, other pixels: the image must be encoded again, not taken from the cache."""
    engine = LocalEngine(tiny_model, keep_cache=True)
    list(engine.stream(_request(tokens=2, temperature=0)))
    other = Image.new("RGB", (120, 90), (10, 200, 10))
    settings = GenerationSettings(max_new_tokens=6, temperature=0)
    request = Request(messages=(Message("user", (ImagePart(other, "green.png"), TextPart("Describe it."))),),
                      settings=settings)
    with_cache = list(engine.stream(request))
    fresh = list(LocalEngine(tiny_model).stream(request))
    assert with_cache[-1].usage.reused_prompt_tokens < with_cache[-1].usage.prompt_tokens - with_cache[-1].usage.image_tokens
    assert _text(with_cache) == _text(fresh)


def test_closing_the_stream_early_stops_the_worker(tiny_model):
    """A consumer that stops reading (closed pipe) must not leave generation running."""
    engine = LocalEngine(tiny_model)
    stream = engine.stream(_request(tokens=100000, temperature=0))
    next(stream)
    stream.close()
    # The one worker thread is free again: a short turn finishes now, not after 100000 tokens.
    events = list(engine.stream(_request(tokens=2, temperature=0)))
    assert events[-1].stop_reason == "max_tokens"


def test_turns_share_one_worker_thread(tiny_model):
    engine = LocalEngine(tiny_model)
    list(engine.stream(_request(tokens=2)))
    after_first = threading.active_count()
    for _ in range(3):
        list(engine.stream(_request(tokens=2)))
    assert threading.active_count() == after_first


def _forced_fast(monkeypatch):
    """Select the fast path on this CPU (its pure-torch step stands in for the CUDA-graph kernels)."""
    import kimi_cli.engine.fast as fast

    monkeypatch.setattr(fast, "available", lambda device: True)


def test_fast_path_matches_plain_greedy(tiny_model, monkeypatch):
    request = _request("What colour is it?", tokens=24, temperature=0)
    plain = list(LocalEngine(tiny_model, mode="plain").stream(request))
    _forced_fast(monkeypatch)
    engine = LocalEngine(tiny_model, mode="fast")
    assert engine.uses_fast_path
    fast = list(engine.stream(request))
    assert isinstance(fast[-1], Finished), fast[-1]
    assert _text(fast) == _text(plain)
    assert fast[-1].usage.generated_tokens == plain[-1].usage.generated_tokens


def test_fast_path_reuses_the_conversation_cache(tiny_model, monkeypatch):
    _forced_fast(monkeypatch)
    first = _request("What colour is it?", tokens=8, temperature=0)
    engine = LocalEngine(tiny_model, mode="fast", keep_cache=True)
    reply = _text(engine.stream(first))
    follow = Request(messages=(*first.messages, Message.text("assistant", reply), Message.text("user", "Why?")),
                     settings=first.settings)
    cached = list(engine.stream(follow))
    fresh = list(LocalEngine(tiny_model, mode="plain").stream(follow))
    assert _text(cached) == _text(fresh)
    assert cached[-1].usage.reused_prompt_tokens > cached[-1].usage.image_tokens


def test_fast_mode_without_a_gpu_is_a_clear_error(tiny_model):
    events = list(LocalEngine(tiny_model, mode="fast").stream(_request()))
    assert isinstance(events[-1], ErrorEvent)
    assert "--decoder fast" in events[-1].message


@pytest.mark.parametrize(("hidden", "available", "expected"), [
    (64, 2, 1), (512, 16, 1), (1023, 8, 1), (2048, 2, 2), (2048, 16, 16), (4096, 0, 1),
])
def test_cpu_threads_for_model_size(hidden, available, expected):
    from kimi_cli.engine.local import cpu_threads

    assert cpu_threads(hidden, available) == expected


def test_small_model_generates_on_one_cpu_thread(tiny_model):
    import torch

    seen: list[int] = []
    engine = LocalEngine(tiny_model)
    original = engine._generate

    def spy(*args):
        seen.append(torch.get_num_threads())
        return original(*args)

    engine._generate = spy
    list(engine.stream(_request(tokens=2)))
    assert seen == [1]


def test_local_engine_has_the_whole_protocol_and_closes(tiny_model):
    from kimi_cli.engine import Capabilities, Engine

    members = [name for name in vars(Engine) if not name.startswith("_")]
    assert set(members) >= {"stream", "cancel", "reset", "close", "capabilities"}
    engine = LocalEngine(tiny_model, mode="plain", keep_cache=True)
    for name in members:
        assert hasattr(engine, name), name
    assert engine.capabilities == Capabilities(keeps_cache=True, counts_tokens=True, local_images=True)
    assert isinstance(list(engine.stream(_request()))[-1], Finished)
    def workers() -> int:
        return sum(t.name == "kimi-generate" and t.is_alive() for t in threading.enumerate())

    before = workers()
    engine.close()
    assert workers() == before - 1  # its generation thread has ended
    with pytest.raises(Exception, match="closed"):
        list(engine.stream(_request()))
