"""Make user-supplied text safe to print: no terminal control, no bidi tricks, valid UTF-8 in JSON.

File names, page specs and paths come from the user (or from whoever named the files) and are
echoed in error lines, notes, the `--dry-run` plan and JSON output. A name like
`x\\e]0;PWNED\\a\\e[2J.png` would retitle and clear the terminal if printed raw, a right-to-left
override would make `gpj.exe` read as `exe.jpg`, and a non-UTF-8 name (which Python holds as lone
surrogates, `\\udcff`) cannot be written as UTF-8 at all. `printable` shows every such character as
a visible escape instead; `json_safe` does the same for the surrogates that strict JSON parsers
reject (json.dumps already escapes control characters).

Never apply these to the model's answer or thinking: that text is the product, not an echo.
This module imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations

import re
from typing import Any

#: C0 controls (newline and tab included: our lines are single lines), DEL, C1 controls, the bidi
#: embeddings, overrides, isolates and marks, the Unicode line/paragraph separators, and lone
#: surrogates (undecodable bytes of a file name, or broken text).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte 0x80-0xff
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control, bidi and surrogate character shown as `\\xNN` / `\\uNNNN`.

    Ordinary text, including any non-ASCII letters and symbols, is unchanged.
    """
    return _UNSAFE.sub(_escape, text)


def json_safe(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, tuples, strings) with lone surrogates made visible escapes,
    so that the encoded JSON is valid UTF-8 that strict parsers accept. Other values pass through."""
    if isinstance(value, str):
        return _SURROGATE.sub(_escape, value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_loads(text: str | bytes) -> Any:
    """`json.loads` for untrusted text: a document nested too deeply for the parser is a
    `json.JSONDecodeError` (a `ValueError`) like any other malformed JSON, not a `RecursionError`."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
