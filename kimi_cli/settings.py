"""Every setting, declared once: its type, default, allowed values, help, and where it may come from.

A setting reaches a run from one of five sources: the config file (key `name`), an environment
variable (`KIMI_NAME`), a command-line flag (`--name`), a resumed chat session (settings marked
`saved`) or the REPL's `/set` (settings marked `settable`). Each source hands its raw value to
`Setting.parse`, which converts and checks it the same way and names the source in its error
(`KIMI_TOP_P=2: out of range: ...`). The CLI options, the `/set` table, the config-file keys and the
saved-session keys are all derived from `SETTINGS`; adding a setting is one `Setting(...)` here plus
the code that uses it. This module imports nothing heavy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any

from kimi_cli import DEFAULT_MODEL
from kimi_cli.errors import UsageError
from kimi_cli.media.options import DEFAULT_MAX_IMAGE_TOKENS, MAX_IMAGE_TOKENS_LIMIT, MIN_IMAGE_TOKENS

#: Largest seed torch's generators take (`torch.Generator.manual_seed`: an unsigned 64-bit value).
MAX_SEED = 2**64 - 1
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_UNSET = ("none", "off")  # what unsets a setting whose default is None (`/set think_budget off`)
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def at_least(low: float, *, above: bool = False, high: float | None = None) -> Callable[[Any], str | None]:
    """A check for numbers: finite, at least `low` (or above it when `above`), at most `high`."""
    def check(value: Any) -> str | None:
        below = value <= low if above else value < low
        if not math.isfinite(value) or below or (high is not None and value > high):
            bound = f"{'above' if above else 'at least'} {low}" + (f" and at most {high}" if high is not None else "")
            return f"out of range: must be {'' if isinstance(value, int) else 'a finite number '}{bound}"
        return None
    return check


def _device(value: str) -> str | None:
    if _DEVICE.match(value):
        return None
    return "unknown device"


def _size(value: str) -> str | None:
    from kimi_cli.sizes import parse_size

    try:
        parse_size(value)
    except UsageError:
        return "not a size: write it like 24GiB, 16GB or 20000MiB"
    return None


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "empty: name a Hub id or a local directory"


@dataclass(frozen=True)
class Setting:
    """One setting: how it is named in every source, its type, default, allowed values and help."""

    name: str
    kind: type  # str, int, float or bool
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    short: str | None = None
    settable: bool = False  # `/set` may change it in a chat
    saved: bool = False  # a chat session keeps it (and a resumed one restores it)
    set_key: str | None = None  # the `/set` key when it differs from `name`
    set_aliases: tuple[str, ...] = ()  # other words `/set` takes for it
    deprecated: str | None = None  # an old name (flag, env var, config key) still read, with a warning
    commands: tuple[str, ...] = ("ask", "chat")  # which commands take the flag

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. `--max-new-tokens`."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. `KIMI_MAX_NEW_TOKENS`."""
        return "KIMI_" + self.name.upper()

    @property
    def config_key(self) -> str:
        """The key in config.toml."""
        return self.name

    @property
    def key(self) -> str:
        """The `/set` key."""
        return self.set_key or self.name

    def hint(self) -> str:
        """What a valid value looks like."""
        return f"{self.flag}: {self.help}"

    def help_text(self) -> str:
        """The flag's help line, with its default and variable."""
        shown = "none" if self.default is None else ("off" if self.default is False else self.default)
        return f"{self.help} [default: {shown}; env {self.env}]"

    def parse(self, value: Any, where: str, echo: bool = False) -> Any:
        """`value` converted and checked; text (flags, env, /set) or typed (config, session, API) alike.

        Raises `UsageError("WHERE: problem")` naming the source; with `echo` the value is named in
        the problem (`/set top_p: 2 is out of range: ...`), for labels that do not show it.
        """
        if self.default is None and (value is None or (isinstance(value, str) and value.strip().lower() in _UNSET)):
            return None
        problem: str | None
        try:
            converted = _convert(self.kind, value)
        except ValueError as exc:
            converted, problem = None, str(exc)
        else:
            if self.choices and converted not in self.choices:
                problem = "unknown value: not one of " + ", ".join(self.choices)
            else:
                problem = self.check(converted) if self.check is not None else None
        if problem:
            if echo:
                problem = f"{value} is {problem.removeprefix('unknown value: ')}"
            raise UsageError(f"{where}: {problem}", hint=self.hint())
        return converted


def _convert(kind: type, value: Any) -> Any:
    """Text is converted; a typed value must already have the kind (an int passes for a float)."""
    if isinstance(value, str) and kind is not str:
        return _from_text(kind, value.strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("must be true or false")
    if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is int and not isinstance(value, int):
            raise ValueError("not an integer")
        return kind(value)
    if kind is str and isinstance(value, str):
        return value
    raise ValueError({str: "must be text", int: "must be an integer", float: "must be a number"}[kind])


def _from_text(kind: type, text: str) -> Any:
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError("not one of " + ", ".join(_TRUE + _FALSE))
    try:
        return kind(text)
    except ValueError:
        raise ValueError("not an integer" if kind is int else "not a number") from None


#: `kimi serve` takes the model's settings too (its defaults for requests that leave them out).
_WITH_SERVE = ("ask", "chat", "serve")

SETTINGS: tuple[Setting, ...] = (
    Setting("model", str, DEFAULT_MODEL, "Hub id or local directory of a Kimi-VL checkpoint.", check=_not_empty,
            short="-m", commands=("ask", "chat", "bench", "serve", "warmup")),
    Setting("backend", str, "auto", "Where generation runs: auto (a running `kimi serve` of the same model, "
            "else here), local (this machine's CPU or GPU) or server (`kimi serve`, or --api-base).",
            choices=("auto", "local", "server")),
    Setting("api_base", str, None, "OpenAI-compatible server to send turns to, e.g. http://host:8000/v1 "
            "(kimi serve, vLLM, SGLang)."),
    Setting("api_key", str, None, "Key for that server (sent as a bearer token); `kimi serve` requires it.",
            commands=("ask", "chat", "serve")),
    Setting("api_model", str, None, "Model id on that server [default: the --model value]."),
    Setting("device", str, "auto", "auto, cuda, cuda:N, mps or cpu.", check=_device,
            commands=("ask", "chat", "bench", "serve", "warmup")),
    Setting("dtype", str, "auto", "auto (bfloat16 on a GPU, float32 on the CPU), bfloat16, float16 or float32.",
            choices=("auto", "bfloat16", "float16", "float32"), commands=(*_WITH_SERVE, "warmup")),
    Setting("attention", str, "auto", "auto, sdpa or flash (flash-attn when installed).",
            choices=("auto", "sdpa", "flash"), commands=_WITH_SERVE),
    Setting("decoder", str, "auto", "Local decode path: fast (CUDA graphs over the compressed cache; needs CUDA "
            "and Triton), plain (transformers forward); auto picks fast on a GPU.",
            choices=("auto", "plain", "fast"), deprecated="engine", commands=_WITH_SERVE),
    Setting("max_new_tokens", int, 32768, "Most tokens to generate, thinking included.", check=at_least(1),
            short="-n", settable=True, saved=True, set_key="max_tokens", set_aliases=("max_new_tokens",),
            commands=_WITH_SERVE),
    Setting("temperature", float, 0.8, "Sampling temperature; 0 is greedy.", check=at_least(0), short="-t",
            settable=True, saved=True, set_aliases=("temp",), commands=_WITH_SERVE),
    Setting("top_p", float, 1.0, "Nucleus sampling mass, above 0 and at most 1.", check=at_least(0, above=True, high=1),
            settable=True, saved=True, set_aliases=("topp",), commands=_WITH_SERVE),
    Setting("seed", int, None, "Random seed for reproducible sampling (0 to 2**64-1).",
            check=at_least(0, high=MAX_SEED)),
    Setting("thinking", str, "collapse", "Thinking display: collapse (one line once the answer starts), show or hide.",
            choices=("collapse", "show", "hide"), settable=True, saved=True),
    Setting("think_budget", int, None, "Most thinking tokens before the engine closes the thinking and the answer "
            "follows; 0 skips thinking; none: no limit.", check=at_least(0), settable=True, saved=True,
            set_aliases=("budget",), commands=_WITH_SERVE),
    Setting("json_schema", str, None, "Constrain the answer (after the thinking) to JSON matching this JSON Schema: "
            "a file path or inline JSON.", commands=("ask",)),
    Setting("json", bool, False, "Constrain the answer (after the thinking) to a JSON object.", commands=("ask",)),
    Setting("max_image_tokens", int, DEFAULT_MAX_IMAGE_TOKENS, "Visual-token budget shared by all inputs of a "
            "prompt.", check=at_least(MIN_IMAGE_TOKENS, high=MAX_IMAGE_TOKENS_LIMIT)),
    Setting("quantize", str, "auto", "Weight format: auto (bf16 when it fits the GPU, else fp8 or int8, else "
            "int4), bf16, fp8, int8 or int4.", choices=("auto", "bf16", "fp8", "int8", "int4"), short="-q",
            commands=("ask", "chat", "warmup")),
    Setting("max_gpu_memory", str, None, "Most GPU memory to use, e.g. 24GiB (also caps this process).",
            check=_size, commands=("ask", "chat", "warmup")),
    Setting("no_stdin", bool, False, "Never read piped stdin as prompt text (safe in `while read` loops).",
            commands=("ask",)),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class _SettingsBase:
    """Methods of the generated `Settings` class."""

    origins: Mapping[str, str]
    notes: tuple[str, ...]

    def explicit(self, name: str) -> bool:
        """Whether `name` was set by some source (not left at its default)."""
        return self.origins.get(name, "default") != "default"

    def saved_values(self) -> dict[str, Any]:
        """The values a chat session keeps."""
        return {s.name: getattr(self, s.name) for s in SETTINGS if s.saved}

    def as_dict(self) -> dict[str, Any]:
        """Every setting's value by name."""
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def with_notes(self, notes: tuple[str, ...]) -> Any:
        """A copy carrying these warnings (for the front end to print)."""
        return replace(self, notes=tuple(notes))  # type: ignore[type-var]

    def with_values(self, where: str = "setting", **values: Any) -> Any:
        """A copy with `values` checked and applied (e.g. `/set`, or the API's overrides)."""
        checked = {k: BY_NAME[k].parse(v, f"{where} {k}={v!r}") for k, v in values.items()}
        origins = {**self.origins, **{k: where for k in checked}}
        return replace(self, **checked, origins=origins)  # type: ignore[type-var]


def _field_type(s: Setting) -> Any:
    return s.kind | None if s.default is None else s.kind


#: The frozen, typed settings of one run: one attribute per `Setting`, plus where each came from
#: (`origins`) and warnings met while reading them (`notes`). Generated from `SETTINGS`.
Settings: Any = make_dataclass(
    "Settings",
    [(s.name, _field_type(s), field(default=s.default)) for s in SETTINGS]
    + [("origins", Mapping[str, str], field(default_factory=dict, compare=False, repr=False)),
       ("notes", tuple[str, ...], field(default=(), compare=False, repr=False))],
    bases=(_SettingsBase,), frozen=True,
)
Settings.__module__ = __name__


def settable() -> tuple[Setting, ...]:
    """The settings `/set` may change, in declaration order."""
    return tuple(s for s in SETTINGS if s.settable)


def saved() -> tuple[Setting, ...]:
    """The settings a chat session keeps."""
    return tuple(s for s in SETTINGS if s.saved)


def for_command(command: str) -> tuple[Setting, ...]:
    """The settings whose flag `kimi COMMAND` takes."""
    return tuple(s for s in SETTINGS if command in s.commands)
