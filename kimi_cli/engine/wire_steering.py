"""The OpenAI wire's steering fields: thinking budget and JSON-schema answers, both directions.

Client side (`steering_fields`): a `kimi serve`, vLLM or SGLang server is asked for what the local
engine does itself: `thinking_token_budget` (vLLM's name) and `response_format`
`{"type": "json_schema", "json_schema": {"name": ..., "schema": ...}}` (vLLM and SGLang accept it).

Server side (`parse_steering`): `kimi serve` reads the same fields, and `reasoning_effort`
(`low`/`medium`/`high`) as the budgets in `REASONING_EFFORT` (an explicit `thinking_token_budget`
wins); `response_format` `{"type": "json_object"}` asks for any object, `{"type": "text"}` for none.
"""

from __future__ import annotations

import json
from typing import Any

from kimi_cli.engine.wire import WireError

#: `reasoning_effort` as thinking budgets (tokens). `minimal`/`none` skip the thinking.
REASONING_EFFORT = {"none": 0, "minimal": 0, "low": 1024, "medium": 4096, "high": 16384}


def steering_fields(settings: Any) -> dict[str, Any]:
    """The request fields for `settings.think_budget` and `settings.json_schema` (none when unset)."""
    body: dict[str, Any] = {}
    if getattr(settings, "think_budget", None) is not None:
        body["thinking_token_budget"] = settings.think_budget
    schema = getattr(settings, "json_schema", None)
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": json.loads(schema), "strict": True}}
    return body


def parse_steering(data: dict[str, Any], default_budget: int | None = None) -> dict[str, Any]:
    """`think_budget` and `json_schema` for `GenerationSettings` from a request body (`WireError` if bad).

    A request without a budget field gets the server's own (`kimi serve --think-budget`); the schema
    only ever comes from the request.
    """
    budget = _budget(data)
    return {"think_budget": default_budget if budget is _UNSET else budget,
            "json_schema": _schema(data.get("response_format"))}


_UNSET: Any = object()


def _budget(data: dict[str, Any]) -> Any:
    if "thinking_token_budget" not in data and "reasoning_effort" not in data:
        return _UNSET
    value = data.get("thinking_token_budget")
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise WireError("thinking_token_budget must be an integer >= 0", 422, "invalid_value",
                            "thinking_token_budget")
        return value
    effort = data.get("reasoning_effort")
    if effort is None:
        return None
    if effort not in REASONING_EFFORT:
        raise WireError("reasoning_effort must be one of " + ", ".join(REASONING_EFFORT), 422, "invalid_value",
                        "reasoning_effort")
    return REASONING_EFFORT[effort]


def _schema(value: Any) -> str | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        inner = value.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if not isinstance(schema, dict):
            raise WireError("response_format.json_schema.schema must be a JSON Schema object", 422,
                            "invalid_value", "response_format")
    else:
        raise WireError("response_format.type must be text, json_object or json_schema", 422, "invalid_value",
                        "response_format")
    from kimi_cli.engine.grammar import check_schema
    from kimi_cli.errors import UsageError

    try:
        check_schema(schema, "response_format")
    except UsageError as exc:
        raise WireError(exc.message, 400, "invalid_schema", "response_format") from None
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)
