"""The application layer: what every front end (CLI, REPL, Python API, benchmarks) calls.

- `kimi_cli.app.inputs`: stdin and positional arguments (no blocking reads for `--dry-run`).
- `kimi_cli.app.media`: plan inputs and load them, build the user message.
- `kimi_cli.app.preflight`: checks that need no model (device, decoder, context length).
- `kimi_cli.app.engines`: the engine factory, one registry keyed by the `backend` setting.
- `kimi_cli.app.turn`: a request from settings and messages; stream one turn through a renderer.

Nothing here prints except through the renderers and notes the front end passes in, and nothing
here imports torch at import time.
"""
