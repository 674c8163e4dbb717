"""The OpenAI wire's thinking budget and JSON-schema fields, both directions (pure)."""

from __future__ import annotations

import json

import pytest

from kimi_cli.conversation import GenerationSettings
from kimi_cli.engine.wire import WireError
from kimi_cli.engine.wire_steering import REASONING_EFFORT, parse_steering, steering_fields

SCHEMA = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}, "required": ["a"]}


def test_client_sends_the_budget_and_the_schema_only_when_set():
    assert steering_fields(GenerationSettings()) == {}
    fields = steering_fields(GenerationSettings(think_budget=0, json_schema=json.dumps(SCHEMA)))
    assert fields["thinking_token_budget"] == 0
    assert fields["response_format"]["type"] == "json_schema"
    assert fields["response_format"]["json_schema"]["schema"] == SCHEMA


@pytest.mark.parametrize(("data", "budget"), [
    ({}, None),
    ({"thinking_token_budget": 64}, 64),
    ({"thinking_token_budget": 0}, 0),
    ({"reasoning_effort": "low"}, REASONING_EFFORT["low"]),
    ({"reasoning_effort": "medium"}, 4096),
    ({"reasoning_effort": "high"}, 16384),
    ({"reasoning_effort": "high", "thinking_token_budget": 5}, 5),  # the explicit budget wins
])
def test_budget_fields(data, budget):
    assert parse_steering(data)["think_budget"] == budget


def test_a_request_without_a_budget_gets_the_servers():
    assert parse_steering({}, default_budget=256)["think_budget"] == 256
    assert parse_steering({"thinking_token_budget": 8}, default_budget=256)["think_budget"] == 8


@pytest.mark.parametrize(("value", "expected"), [
    (None, None),
    ({"type": "text"}, None),
    ({"type": "json_object"}, {"type": "object"}),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}, SCHEMA),
])
def test_response_formats(value, expected):
    text = parse_steering({"response_format": value})["json_schema"]
    assert (None if text is None else json.loads(text)) == expected


@pytest.mark.parametrize(("data", "status"), [
    ({"thinking_token_budget": -1}, 422),
    ({"thinking_token_budget": "8"}, 422),
    ({"thinking_token_budget": True}, 422),
    ({"reasoning_effort": "extreme"}, 422),
    ({"response_format": {"type": "xml"}}, 422),
    ({"response_format": {"type": "json_schema"}}, 422),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "frobnicate"}}}}, 400),
])
def test_bad_fields_are_wire_errors(data, status):
    with pytest.raises(WireError) as info:
        parse_steering(data)
    assert info.value.status == status
