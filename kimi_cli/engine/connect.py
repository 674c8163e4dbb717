"""Where a turn runs when it does not run here: the `--backend` and `--api-*` settings resolved to a server.

* `--api-base URL` names an OpenAI-compatible server (`kimi serve` elsewhere, vLLM, SGLang); its
  key comes from `--api-key`/`KIMI_API_KEY`, its model id from `--api-model` (default: `--model`).
* Without it, `--backend auto` and `--backend server` look for a running `kimi serve` of the same
  model through its discovery file (`kimi_cli.discovery`), and use the token the file carries.
* `--backend auto` falls back to loading the model here; `--backend server` fails instead.

No heavy imports: this runs before anything loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kimi_cli.errors import ModelLoadError, UsageError

BACKENDS = ("auto", "local", "server")


@dataclass(frozen=True)
class Target:
    """A server to send turns to."""

    api_base: str
    model: str  # the id the server knows the model by
    api_key: str | None
    #: "server" for a `kimi serve` found on this machine, "remote" for an explicit --api-base.
    kind: str


def find_target(backend: str, model: str, api_base: str | None = None, api_key: str | None = None,
                api_model: str | None = None, env: Mapping[str, str] | None = None) -> Target | None:
    """The server for these settings, or None to run locally. Raises for impossible combinations."""
    from kimi_cli.discovery import find_server

    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend}: unknown value", hint="use one of: " + ", ".join(BACKENDS))
    if api_base:
        if backend == "local":
            raise UsageError("--api-base sends turns to a server, --backend local runs them here",
                             hint="drop one of the two (KIMI_API_BASE sets --api-base)")
        return Target(api_base.rstrip("/"), api_model or model, api_key, "remote")
    if backend == "local":
        return None
    info = find_server(model, env)
    if info is not None:
        return Target(info.api_base, info.model_id, info.token, "server")
    if backend == "server":
        raise ModelLoadError(f"no running `kimi serve` of {model} found on this machine",
                             hint=f"start one with `kimi serve --model {model}`, or pass --api-base URL")
    return None


def remote_engine(target: Target, implicit_thinking: bool, processor: Any = None) -> Any:
    """The client engine for `target` (images resized with `processor`, the model's image config)."""
    from kimi_cli.engine.remote import RemoteEngine

    return RemoteEngine(target.api_base, target.model, target.api_key, implicit_thinking=implicit_thinking,
                        processor=processor, label=target.kind)
