"""The engine factory: one registry from the `backend` setting to the code that makes the engine.

`auto` and `server` send turns to a server when the settings name one (`--api-base`) or one runs
here (`kimi serve`'s discovery file; see `kimi_cli.engine.connect`); `auto` else runs them here. A
new backend is one `Backend` entry in `BACKENDS`: `make(settings, keep_cache) -> Engine`, and
`check(settings)`, which fails fast (a `UsageError`) before anything slow; plus its name in the
`backend` setting's choices (`kimi_cli.settings`; a test keeps the two equal).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kimi_cli.engine import Engine
from kimi_cli.errors import UsageError, debug_enabled


@dataclass(frozen=True)
class Backend:
    """Where generation runs: how to make its engine, and what to check before that."""

    make: Callable[[Any, bool], Engine]  # (settings, keep_cache) -> Engine
    check: Callable[[Any], None]  # raises UsageError before anything loads
    summary: str


def make_local_engine(settings: Any, keep_cache: bool = False, warm_from: int | None = None) -> Engine:
    """Load the checkpoint named by the settings and run it here, through transformers.

    The fast path's GPU kernels compile while the weights load (`kimi_cli.app.warmup`), for turns of
    at least `warm_from` positions (default: `max_new_tokens` + 2, what a turn of these settings takes).
    """
    from kimi_cli.app.warmup import KernelWarmup

    low = settings.max_new_tokens + 2 if warm_from is None else warm_from
    hook = KernelWarmup(settings.decoder, low_tokens=low)
    return local_engine(load_local(settings, before_weights=hook), settings.decoder, keep_cache)


def load_local(settings: Any, before_weights: Any = None) -> Any:
    """Check the device, then load the checkpoint named by the settings (notes on stderr)."""
    from kimi_cli.app.preflight import check_local_device
    from kimi_cli.model import prefetch
    from kimi_cli.model.checkpoint import checkpoint_file, load_model

    config = checkpoint_file(settings.model, "config.json")  # on disk already: no network
    # the weight files start into the page cache before torch imports (`load_model` adopts the
    # readers); they stop however the load ends
    with prefetch.warming(None if config is None else config.parent):
        check_local_device(settings)
        quiet_libraries()
        from kimi_cli.app.weights import load_args, load_notes

        with status(f"loading {settings.model}"):
            loaded = load_model(settings.model, device=settings.device, dtype=settings.dtype,
                                attention=settings.attention, before_weights=before_weights,
                                **load_args(settings))
    for line in load_notes(loaded, settings.quantize, debug=debug_enabled(sys.argv)):
        sys.stderr.write(f"kimi: note: {line}\n")
    return loaded


def local_engine(loaded: Any, decoder: str = "auto", keep_cache: bool = False) -> Engine:
    """The local engine over an already loaded model (`kimi bench` loads once for every stage)."""
    from kimi_cli.engine.local import LocalEngine
    from kimi_cli.model.facts import checkpoint_thinks

    return LocalEngine(loaded, mode=decoder, keep_cache=keep_cache,  # type: ignore[arg-type]
                       implicit_thinking=checkpoint_thinks(loaded))


def _check_local(settings: Any) -> None:
    from kimi_cli.app.preflight import check_local_device

    check_local_device(settings)


def _target(settings: Any) -> Any:
    """The server to use (`kimi_cli.engine.connect`), or None to run here.

    Looked up once per process and settings: the preflight and the engine ask the same question,
    and finding a local server costs a `/health` round trip.
    """
    from kimi_cli.discovery import runtime_dir

    return _find_target(settings.backend, str(settings.model), settings.api_base, settings.api_key,
                        settings.api_model, str(runtime_dir()))


@functools.lru_cache(maxsize=8)
def _find_target(backend: str, model: str, api_base: str | None, api_key: str | None, api_model: str | None,
                 where: str) -> Any:
    from kimi_cli.engine.connect import find_target

    return find_target(backend, model, api_base, api_key, api_model)


def make_routed_engine(settings: Any, keep_cache: bool = False) -> Engine:
    """A client of the server the settings point to (`--api-base`, or a discovered `kimi serve`);
    with `--backend auto` and no server, the local engine."""
    target = _target(settings)
    if target is None:
        return make_local_engine(settings, keep_cache)
    from kimi_cli.engine.connect import remote_engine
    from kimi_cli.model.image_processor import processor_config_for

    return remote_engine(target, implicit_thinking=remote_thinks(str(settings.model)),
                         processor=processor_config_for(settings.model))


def remote_thinks(model: str) -> bool:
    """Whether a served model's inline text counts as thinking before any marker.

    Only matters for a server that sends the raw text (vLLM without a reasoning parser). From the
    checkpoint's own files when they are on disk here; else the official checkpoint thinks, and any
    other model is taken as not thinking (a reply that opens with `◁think▷` is still split).
    """
    from kimi_cli import DEFAULT_MODEL
    from kimi_cli.model.checkpoint import checkpoint_file
    from kimi_cli.model.facts import CHAT_TEMPLATE_FILE, checkpoint_thinks

    for name in (CHAT_TEMPLATE_FILE, "tokenizer_config.json"):
        found = checkpoint_file(model, name)
        if found is not None:
            return checkpoint_thinks(found.parent)
    return model == DEFAULT_MODEL


def _check_routed(settings: Any) -> None:
    if _target(settings) is None:
        _check_local(settings)


def _check_only_local(settings: Any) -> None:
    _target(settings)  # refuses --api-base with --backend local
    _check_local(settings)


BACKENDS: dict[str, Backend] = {
    "auto": Backend(make_routed_engine, _check_routed, "a running `kimi serve` of the same model, else local"),
    "local": Backend(make_local_engine, _check_only_local, "this machine, through transformers"),
    "server": Backend(make_routed_engine, _check_routed, "`kimi serve` on this machine, or the --api-base server"),
}


def backend_for(settings: Any) -> Backend:
    """The registered backend named by `settings.backend`."""
    backend = BACKENDS.get(settings.backend)
    if backend is None:
        raise UsageError(f"backend {settings.backend!r}: unknown", hint="use one of: " + ", ".join(BACKENDS))
    return backend


def preflight(settings: Any) -> None:
    """The backend's checks that need no model (device present, decoder possible)."""
    backend_for(settings).check(settings)


def make_engine(settings: Any, keep_cache: bool = False) -> Engine:
    """The engine for `settings.backend` (`keep_cache`: a conversation that reuses its context)."""
    return backend_for(settings).make(settings, keep_cache)


def quiet_libraries() -> None:
    """Keep transformers' progress bars and advice off stderr unless stderr is a terminal."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    if not sys.stderr.isatty():
        transformers.utils.logging.disable_progress_bar()


class status:
    """Say on stderr what slow thing is starting, only when stderr is a terminal.

    A plain line rather than a spinner: huggingface_hub's download bars and transformers'
    weight-loading bar draw on the same terminal and would fight a spinner for the cursor.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __enter__(self) -> status:
        if sys.stderr.isatty():
            sys.stderr.write(self.text + " ...\n")
            sys.stderr.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        return None
