"""Run `kimi serve`: bind the address, publish the discovery file, serve with uvicorn until stopped or idle.

The socket is bound before the discovery file is written, so a second server that fails to bind
never replaces a running server's file. The file is removed again on every way out (Ctrl-C,
SIGTERM, the idle timeout); a server that was killed leaves a stale file, which clients ignore.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kimi_cli.conversation import GenerationSettings
from kimi_cli.discovery import ServerInfo, new_info, remove_info, write_info
from kimi_cli.errors import UsageError
from kimi_cli.server.config import ServeConfig

#: Names a request's `model` may use besides the served id.
ALIASES = ("kimi-vl",)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; a taken port or a bad address is a usage error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="pick another --port, or stop the server that uses it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def context_length(engine: Any) -> int:
    """The served model's context length, from its config (131072 for Kimi-VL-A3B)."""
    config = getattr(getattr(getattr(engine, "loaded", None), "model", None), "config", None)
    text = getattr(config, "text_config", config)
    value = getattr(text, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else 131072


def prompt_counter(engine: Any) -> Callable[[Any], int] | None:
    """A prompt-size function for the engine's tokenizer and image processor (None if it has none)."""
    loaded = getattr(engine, "loaded", None)
    tokenizer = getattr(loaded, "tokenizer", None)
    processor = getattr(loaded, "processor_config", None)
    if tokenizer is None or processor is None:
        return None
    from kimi_cli.server.protocol import prompt_size

    return lambda messages: prompt_size(messages, tokenizer, processor)


def serve(engine: Any, config: ServeConfig, model_spec: str, defaults: GenerationSettings,
          insecure_no_key: bool = False) -> int:
    """Serve `engine` until Ctrl-C, SIGTERM or the idle timeout; returns the exit code."""
    import uvicorn

    from kimi_cli.app.warmup import warm_turn
    from kimi_cli.server.app import Served, create_app
    from kimi_cli.server.scheduler import Scheduler

    sock = bind(config.host, config.port)
    # Before the first client can connect: the vision tower's first use and the decode graphs' capture
    # happen here, not in a client's first request (the kernels compiled while the weights loaded).
    seconds = warm_turn(engine)
    sys.stderr.write(f"kimi serve: warmed up in {seconds:.1f} s (kernels compiled, decode graphs captured)\n")
    info = new_info(config.host, config.port, model_spec, model_spec)
    tokens = None if insecure_no_key and not config.api_key else tuple(t for t in (info.token, config.api_key) if t)
    served = Served(model_id=model_spec, aliases=ALIASES, context_length=context_length(engine),
                    instance=info.instance, defaults=defaults, tokens=tokens, count_prompt=prompt_counter(engine))
    scheduler = Scheduler(engine, config.max_queue)
    holder: dict[str, Any] = {}
    app = create_app(served, config, scheduler, lifespan=_lifespan(config, scheduler, holder))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, log_config=None,
                                           timeout_graceful_shutdown=5, ws="none", lifespan="on"))
    holder["server"] = server
    path = write_info(info)
    _announce(info, config, path)
    try:
        _run_until_signal(server, sock)
    finally:
        scheduler.close()
        if path is not None:
            remove_info(path, info)
        sock.close()
    if holder.get("idle"):
        sys.stderr.write(f"kimi serve: idle for {_seconds(config.idle_timeout_s)}; exiting\n")
    return 0


class _Stopped(Exception):
    """SIGTERM arrived (uvicorn re-raises it after its graceful shutdown)."""


def _run_until_signal(server: Any, sock: socket.socket) -> None:
    """Run uvicorn; Ctrl-C and SIGTERM end it normally, so the discovery file is always removed."""
    def stop(signum: int, frame: Any) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _announce(info: ServerInfo, config: ServeConfig, path: Any) -> None:
    where = f"http://{config.host}:{config.port}/v1"
    lines = [f"kimi serve: {info.model_id} on {where} (one generation at a time, others queued)"]
    if path is not None:  # noqa: SIM102
        lines.append(f"kimi serve: `kimi ask`/`kimi chat` on this machine connect on their own (token in {path})")
    if config.idle_timeout_s:
        lines.append(f"kimi serve: exits after {_seconds(config.idle_timeout_s)} without requests")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _lifespan(config: ServeConfig, scheduler: Any, holder: dict[str, Any]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.ensure_future(_idle_watch(config, scheduler, holder)) if config.idle_timeout_s else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
    return lifespan


async def _idle_watch(config: ServeConfig, scheduler: Any, holder: dict[str, Any]) -> None:
    """Ask uvicorn to exit once nothing has run or waited for `idle_timeout_s` (frees the GPU)."""
    limit = float(config.idle_timeout_s or 0)
    while True:
        await asyncio.sleep(min(1.0, limit / 4))
        if not scheduler.busy and time.monotonic() - scheduler.last_active >= limit:
            holder["idle"] = True
            holder["server"].should_exit = True
            return


def _seconds(value: float | None) -> str:
    value = float(value or 0)
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"
