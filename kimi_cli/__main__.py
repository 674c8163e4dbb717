"""`python -m kimi_cli` runs the same entry point as the `kimi` command."""

from __future__ import annotations

from kimi_cli.cli import main

if __name__ == "__main__":
    main()
