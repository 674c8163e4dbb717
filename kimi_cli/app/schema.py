"""`--json-schema FILE|JSON` and `--json`: the schema a run's answers must match, read and checked once.

Reading is pure apart from opening the file: inline JSON starts with `{`; anything else is a path.
The schema is handed to engines as canonical JSON text (`GenerationSettings.json_schema`), which the
local engine compiles into a grammar and a remote backend passes on as `response_format`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.textsafe import json_loads, printable

#: A schema file larger than this is refused (a schema is a few kilobytes; this is not one).
MAX_SCHEMA_BYTES = 1 << 20
_HINT = "--json-schema takes a JSON Schema object, inline ('{\"type\": \"object\", ...}') or as a file path"


def parse_schema(value: str) -> dict[str, Any]:
    """The schema object named by `value` (inline JSON or a file path); `UsageError` if unusable."""
    text, where = value, "--json-schema"
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        where = f"--json-schema {printable(value)}"
        try:
            if path.stat().st_size > MAX_SCHEMA_BYTES:
                raise UsageError(f"{where}: larger than {MAX_SCHEMA_BYTES // 1024} KiB", hint=_HINT)
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc))
            raise UsageError(f"{where}: cannot read: {reason}", hint=_HINT) from None
    try:
        schema = json_loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}", hint=_HINT) from None
    if not isinstance(schema, dict):
        raise UsageError(f"{where}: a schema must be a JSON object", hint=_HINT)
    return schema


def schema_of(settings: Any) -> dict[str, Any] | None:
    """The settings' schema: `json_schema`, else any object for `json`, else None."""
    value = getattr(settings, "json_schema", None)
    if value:
        return parse_schema(value)
    if getattr(settings, "json", False):
        from kimi_cli.engine.grammar import ANY_OBJECT

        return dict(ANY_OBJECT)
    return None


@lru_cache(maxsize=8)
def _text_of(value: str | None, any_object: bool) -> str | None:
    from kimi_cli.engine.grammar import ANY_OBJECT

    schema = parse_schema(value) if value else (ANY_OBJECT if any_object else None)
    return None if schema is None else json.dumps(schema, sort_keys=True, ensure_ascii=False)


def schema_text(settings: Any) -> str | None:
    """The schema as canonical JSON text for `GenerationSettings` (read once per value)."""
    return _text_of(getattr(settings, "json_schema", None) or None, bool(getattr(settings, "json", False)))


def check_schema_settings(settings: Any) -> None:
    """Read and compile the schema before anything slow (exit 2 with the file and the problem)."""
    schema = schema_of(settings)
    if schema is not None:
        from kimi_cli.engine.grammar import check_schema

        check_schema(schema)
