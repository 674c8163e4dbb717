"""Settings precedence: built-in defaults <- config file <- environment variables <- command-line flags.

The config file is TOML at `$XDG_CONFIG_HOME/kimi/config.toml` (default `~/.config/kimi/config.toml`),
with top-level keys named like the flags: `model`, `device`, `temperature`, `max_new_tokens`, `top_p`,
`thinking`, `engine`, `max_image_tokens`. Environment variables are the same names upper-cased with a
`KIMI_` prefix (`KIMI_MODEL`, `KIMI_DEVICE`, ...). Parsing is pure: `merge_settings` takes values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kimi_cli import DEFAULT_MODEL
from kimi_cli.errors import UsageError

DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "device": "auto",
    "dtype": "auto",
    "attention": "auto",
    "engine": "auto",
    "temperature": 0.8,
    "top_p": 1.0,
    "max_new_tokens": 32768,
    "thinking": "collapse",
    "max_image_tokens": 16384,
}

_TYPES: dict[str, type] = {"temperature": float, "top_p": float, "max_new_tokens": int, "max_image_tokens": int}


def config_path(env: Mapping[str, str]) -> Path:
    """Where the config file lives (XDG)."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "kimi" / "config.toml"


def data_dir(env: Mapping[str, str]) -> Path:
    """Where history and sessions live (XDG data home)."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "kimi"


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file's values; an absent file is empty, a malformed one is a usage error."""
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no TOML reader in the standard library
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: invalid config file ({exc})", hint="fix or remove the file") from None
    return {k: v for k, v in data.items() if k in DEFAULTS}


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Values from `KIMI_*` environment variables, converted to their types."""
    out: dict[str, Any] = {}
    for key in DEFAULTS:
        raw = env.get("KIMI_" + key.upper())
        if raw is None or raw == "":
            continue
        out[key] = _convert(key, raw, f"KIMI_{key.upper()}")
    return out


def _convert(key: str, raw: Any, where: str) -> Any:
    kind = _TYPES.get(key)
    if kind is None:
        return raw
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {raw!r} is not a valid {kind.__name__}", hint=f"set a number for {key}") from None


def merge_settings(file_values: Mapping[str, Any], env_values: Mapping[str, Any],
                   flags: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then the config file, then env vars, then flags that were given (not None)."""
    merged = dict(DEFAULTS)
    for layer, where in ((file_values, "config file"), (env_values, "environment"), (flags, "flag")):
        for key, value in layer.items():
            if value is not None and key in DEFAULTS:
                merged[key] = _convert(key, value, f"{key} ({where})")
    return merged


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The effective settings for this process."""
    env = os.environ if env is None else env
    return merge_settings(read_config_file(config_path(env)), from_env(env), flags)
