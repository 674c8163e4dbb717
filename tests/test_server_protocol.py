"""`kimi serve`'s pure parts: request parsing, reply formatting, stop strings, its own options."""

from __future__ import annotations

import json

import pytest

from kimi_cli.conversation import GenerationSettings
from kimi_cli.engine.wire import WireError
from kimi_cli.errors import UsageError
from kimi_cli.events.types import Finished, Usage
from kimi_cli.server.config import ServeConfig, check_exposure, is_loopback, parse_duration
from kimi_cli.server.protocol import Reply, StopMatcher, fit_context, parse_chat, usage_object

CONFIG = ServeConfig(max_new_tokens=1000)
IDS = ("org/model", "kimi-vl")
DEFAULTS = GenerationSettings(max_new_tokens=500, temperature=0.8, top_p=1.0)


def parse(**fields):
    body = {"model": "kimi-vl", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(json.dumps(body).encode(), CONFIG, IDS, DEFAULTS)


def test_a_body_nested_too_deeply_is_a_400():
    body = b'{"model": "kimi-vl", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(WireError) as err:
        parse_chat(body, CONFIG, IDS, DEFAULTS)
    assert err.value.status == 400 and "not valid JSON" in str(err.value)


def test_defaults_and_fields():
    call = parse()
    assert call.request.settings == DEFAULTS and not call.stream and call.stop == ()
    call = parse(max_completion_tokens=7, max_tokens=9, temperature=0, top_p=0.5, seed=4, stream=True,
                 stream_options={"include_usage": True}, stop="END")
    assert call.request.settings == GenerationSettings(max_new_tokens=7, temperature=0.0, top_p=0.5, seed=4)
    assert call.stream and call.include_usage and call.stop == ("END",)


def test_defaults_are_capped_by_the_server_limit():
    call = parse_chat(b'{"messages": [{"role": "user", "content": "hi"}]}', ServeConfig(max_new_tokens=100),
                      IDS, DEFAULTS)
    assert call.request.settings.max_new_tokens == 100 and call.model == "org/model"


@pytest.mark.parametrize(("fields", "status", "code"), [
    ({"model": "other"}, 404, "model_not_found"),
    ({"max_tokens": 0}, 422, "invalid_value"),
    ({"max_tokens": 1.5}, 422, "invalid_value"),
    ({"max_tokens": 1001}, 400, "max_tokens_too_large"),
    ({"temperature": -1}, 422, "invalid_value"),
    ({"temperature": True}, 422, "invalid_value"),
    ({"top_p": 2}, 422, "invalid_value"),
    ({"seed": "x"}, 422, "invalid_value"),
    ({"n": 2}, 422, "invalid_value"),
    ({"stream": "yes"}, 422, "invalid_value"),
    ({"stop": ["a", ""]}, 422, "invalid_value"),
    ({"stop": ["a"] * 5}, 422, "invalid_value"),
    ({"stream_options": []}, 422, "invalid_value"),
])
def test_invalid_fields(fields, status, code):
    with pytest.raises(WireError) as info:
        parse(**fields)
    assert (info.value.status, info.value.code) == (status, code)


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"null"])
def test_malformed_bodies(body):
    with pytest.raises(WireError) as info:
        parse_chat(body, CONFIG, IDS, DEFAULTS)
    assert (info.value.status, info.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(("stops", "chunks", "sent", "matched"), [
    ((), ["ab", "cd"], "abcd", False),
    (("END",), ["The E", "N", "D and more"], "The ", True),
    (("END",), ["The E", "nd"], "The End", False),
    (("xy", "b"), ["a", "b", "c"], "a", True),
    (("\n\n",), ["one\n", "\ntwo"], "one", True),
])
def test_stop_strings(stops, chunks, sent, matched):
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(c) for c in chunks) + matcher.flush()
    assert (out, matcher.matched) == (sent, matched)


def test_reply_shapes():
    reply = Reply("kimi-vl")
    usage = Usage(prompt_tokens=10, image_tokens=4, generated_tokens=6, thinking_tokens=3, reused_prompt_tokens=2)
    whole = reply.response("why", "because", Finished("max_tokens", usage), stopped=False)
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": "because",
                                              "reasoning_content": "why", "reasoning": "why"}
    assert usage_object(usage) == {
        "prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16,
        "completion_tokens_details": {"reasoning_tokens": 3},
        "prompt_tokens_details": {"cached_tokens": 2, "image_tokens": 4}}
    assert reply.usage_chunk(usage)["choices"] == []
    assert reply.chunk({"content": "x"}, "stop")["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("90s", 90), ("1.5h", 5400), ("600", 600), ("2 min", 120), ("0", None), ("never", None),
    (None, None),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(UsageError):
        parse_duration("soon")


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("192.168.1.4", False), ("example", False)])
def test_exposure(host, loopback):
    assert is_loopback(host) is loopback
    check_exposure(host, "key", False)
    check_exposure(host, None, True)
    if not loopback:
        with pytest.raises(UsageError):
            check_exposure(host, None, False)


def test_context_fit():
    call = parse(max_tokens=400)
    assert fit_context(call, 100, 1000) is call
    assert fit_context(call, 700, 1000).request.settings.max_new_tokens == 300
    with pytest.raises(WireError) as info:
        fit_context(call, 1000, 1000)
    assert info.value.code == "context_length_exceeded"
