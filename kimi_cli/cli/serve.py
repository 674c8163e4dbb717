"""`kimi serve`: keep the model loaded and speak the OpenAI chat API on a local port."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kimi_cli.cli import options as o
from kimi_cli.cli.app import app
from kimi_cli.server.config import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_MB,
    DEFAULT_MAX_IMAGES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    ServeConfig,
)


@app.command()
@o.with_settings("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but loopback needs --api-key.")]
    = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = DEFAULT_PORT,
    idle_timeout: Annotated[str, typer.Option(
        "--idle-timeout", help="Exit (freeing the GPU) after this long without requests, e.g. 30m, 2h; 0: never.")]
    = "0",
    insecure_no_key: Annotated[bool, typer.Option(
        "--insecure-no-key", help="Serve a non-loopback --host without any key (trusted networks only).")] = False,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Most images in one request.")]
    = DEFAULT_MAX_IMAGES,
    max_body_mb: Annotated[int, typer.Option("--max-body-mb", min=1, help="Largest request body, in MiB.")]
    = DEFAULT_MAX_BODY_MB,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, help="Most requests waiting; more get 503.")]
    = DEFAULT_MAX_QUEUE,
    flags: dict[str, object] | None = None,
) -> None:
    """Load the model once and serve it over the OpenAI chat API (streaming, images as data: URLs).

    One generation runs at a time; other requests wait in a first-come-first-served queue. On this
    machine `kimi ask` and `kimi chat` find the server by themselves (a private discovery file).
    --temperature, --top-p and --max-new-tokens are the defaults for requests that leave them out
    (--max-new-tokens is also the most a request may ask for).

    Example: kimi serve --idle-timeout 30m
    """
    from kimi_cli.config import load_settings
    from kimi_cli.server.config import check_exposure, parse_duration

    settings = load_settings(flags or {})
    check_exposure(host, settings.api_key, insecure_no_key)
    config = ServeConfig(host=host, port=port, api_key=settings.api_key, idle_timeout_s=parse_duration(idle_timeout),
                         max_body_bytes=max_body_mb * 1024 * 1024, max_images=max_images, max_queue=max_queue,
                         max_new_tokens=settings.max_new_tokens)
    raise typer.Exit(_run(settings, config, insecure_no_key))


def _run(settings: Any, config: ServeConfig, insecure_no_key: bool) -> int:
    from kimi_cli.app.engines import make_local_engine
    from kimi_cli.app.turn import generation_settings
    from kimi_cli.server.main import bind, serve

    bind(config.host, config.port).close()  # a taken port fails now, not after a minute of loading
    # checks the device first; kernels for every context, since a request may ask for fewer tokens
    engine = make_local_engine(settings, keep_cache=True, warm_from=1)
    defaults = generation_settings(settings)
    return serve(engine, config, str(settings.model), defaults, insecure_no_key)
