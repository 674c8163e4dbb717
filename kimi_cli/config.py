"""Where settings come from, and their precedence: defaults <- config file <- env <- session <- flags.

The config file is TOML at `$XDG_CONFIG_HOME/kimi/config.toml` (default `~/.config/kimi/config.toml`)
with top-level keys named like the settings (`model = "/models/kimi-vl"`); environment variables are
`KIMI_` and the name upper-cased. The settings themselves are declared in `kimi_cli.settings`; every
source's values go through the same `Setting.parse`, and errors name the source. On Python 3.10
the file is read with `tomli` (a dependency there); 3.11+ uses the standard library's `tomllib`.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.settings import BY_NAME, SETTINGS, Setting, Settings

#: Labels a value for error messages, e.g. `KIMI_TOP_P=2` or `config.toml: model = 5`.
Where = Callable[[Setting, str, Any], str]
Layer = tuple[Mapping[str, Any], Where]


def config_path(env: Mapping[str, str]) -> Path:
    """Where the config file lives (XDG)."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "kimi" / "config.toml"


def data_dir(env: Mapping[str, str]) -> Path:
    """Where history and sessions live (XDG data home)."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "kimi"


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # Python 3.10: a declared dependency there

    return tomli


def _known_keys() -> dict[str, str]:
    """Accepted spellings (names and deprecated names) -> setting name."""
    keys = {s.config_key: s.name for s in SETTINGS}
    keys.update({s.deprecated: s.name for s in SETTINGS if s.deprecated})
    return keys


def unknown_key_notes(keys: list[str], where: str) -> tuple[str, ...]:
    """`where: unknown key 'modle' (did you mean 'model'?)` for each key no setting has."""
    known = _known_keys()
    notes = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            notes.append(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return tuple(notes)


def read_config_file(path: Path) -> dict[str, Any]:
    """The config file's values (as TOML typed them); absent is empty, malformed is a usage error."""
    if not path.is_file():
        return {}
    toml = _toml()
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: invalid config file ({exc})", hint="fix or remove the file") from None
    return data


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Values from `KIMI_*` environment variables, converted and checked (errors name the variable)."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        for name in (s.env, *(("KIMI_" + s.deprecated.upper(),) if s.deprecated else ())):
            raw = env.get(name)
            if raw is not None and raw != "" and s.name not in out:
                out[s.name] = s.parse(raw, f"{name}={raw}")
    return out


def env_deprecations(env: Mapping[str, str]) -> tuple[str, ...]:
    """Warnings for deprecated variables that are set."""
    return tuple(f"{'KIMI_' + s.deprecated.upper()} is deprecated; use {s.env}" for s in SETTINGS
                 if s.deprecated and env.get("KIMI_" + s.deprecated.upper()))


def flag_where(s: Setting, key: str, value: Any) -> str:
    """`--max-new-tokens 0` (`--engine fast` for the deprecated spelling)."""
    flag = "--" + key.replace("_", "-")
    return flag if s.kind is bool else f"{flag} {value}"


def _file_where(path: Path) -> Where:
    return lambda s, key, value: f"{path.name}: {key} = {value!r}"


def _env_where(s: Setting, key: str, value: Any) -> str:
    return f"KIMI_{key.upper()}={value}"


def session_where(name: str) -> Where:
    """Labels for a saved chat session's values: `session NAME: temperature -3`."""
    return lambda s, key, value: f"session {name}: {key} {value!r}"


def resolve(*layers: Layer) -> Any:
    """Defaults, then each layer in turn (later wins); `None` values and unknown keys are skipped."""
    values = {s.name: s.default for s in SETTINGS}
    origins = {s.name: "default" for s in SETTINGS}
    notes: list[str] = []
    for layer, where in layers:
        for key, value in layer.items():
            s = BY_NAME.get(key) or next((x for x in SETTINGS if x.deprecated == key), None)
            if s is None or value is None or (key != s.name and layer.get(s.name) is not None):
                continue
            label = where(s, key, value)
            values[s.name] = s.parse(value, label)
            origins[s.name] = label
            if key != s.name and where is flag_where:
                notes.append(f"--{key} is deprecated; use {s.flag} (same values)")
    return Settings(**values, origins=origins, notes=tuple(notes))


def merge_settings(file_values: Mapping[str, Any], env_values: Mapping[str, Any], flags: Mapping[str, Any],
                   saved: Mapping[str, Any] | None = None, session: str = "") -> Any:
    """Defaults, then the config file, env vars, a resumed session's values, then the flags given."""
    layers: list[Layer] = [(file_values, _file_where(Path("config.toml"))), (env_values, _env_where)]
    if saved:
        layers.append((saved, session_where(session)))
    layers.append((flags, flag_where))
    return resolve(*layers)


def load_settings(flags: Mapping[str, Any], env: Mapping[str, str] | None = None,
                  saved: Mapping[str, Any] | None = None, session: str = "") -> Any:
    """The effective settings for this process; `notes` holds warnings (unknown keys, old names)."""
    env = os.environ if env is None else env
    path = config_path(env)
    file_values = read_config_file(path)
    settings = resolve(
        (file_values, _file_where(path)), (from_env(env), _env_where),
        *([(saved, session_where(session))] if saved else []), (flags, flag_where))
    old = [f"{path.name}: {s.deprecated!r} is deprecated; use {s.config_key!r}" for s in SETTINGS
           if s.deprecated and s.deprecated in file_values]
    notes = (*unknown_key_notes(list(file_values), path.name), *old, *env_deprecations(env), *settings.notes)
    return settings.with_notes(notes) if notes else settings
