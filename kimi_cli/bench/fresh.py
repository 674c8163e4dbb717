"""Time to first token of a fresh `kimi ask` process, weight read excluded: what a one-shot user waits for.

The child runs `python -m kimi_cli ask IMAGE QUESTION --format jsonl`; its stdout streams one JSON
record per event, flushed as it goes, so the parent notes when the first text record arrives. The
child's own `finished` record carries `load_s` (resolve + read weights onto the device) and
`first_token_s` (from the start of the turn). What is reported:

- `wall_first_text_s`: process start -> first text record (imports, media loading, weight read, prompt,
  vision, prefill, graph capture or compilation, first token);
- `ttft_excl_load_s` = `wall_first_text_s` - `load_s`: the wait without the weight read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class FreshRun:
    """One fresh process."""

    engine: str
    exit_code: int | None = None
    wall_first_text_s: float | None = None
    wall_total_s: float | None = None
    load_s: float | None = None
    first_token_s: float | None = None
    tokens_per_s: float | None = None
    generated: int | None = None
    ttft_excl_load_s: float | None = None
    error: str | None = None


def ask_command(model: str, image: Path, question: str, engine: str, tokens: int, device: str) -> list[str]:
    """The child's argv."""
    return [sys.executable, "-m", "kimi_cli", "ask", str(image), question, "--model", model,
            "--format", "jsonl", "--max-new-tokens", str(tokens), "--temperature", "0", "--seed", "0",
            "--engine", engine, "--device", device, "--thinking", "show"]


def _absorb(run: FreshRun, record: dict, start: float) -> None:
    kind = record.get("type")
    if kind in ("thinking", "answer") and record.get("text") and run.wall_first_text_s is None:
        run.wall_first_text_s = time.perf_counter() - start
    elif kind == "finished":
        timings = record.get("timings", {})
        run.load_s = timings.get("load_s")
        run.first_token_s = timings.get("first_token_s")
        run.tokens_per_s = timings.get("tokens_per_s")
        run.generated = record.get("usage", {}).get("generated_tokens")
    elif kind == "error":
        run.error = record.get("message")


def fresh_ttft(model: str, image: Path, question: str, engine: str = "fast", tokens: int = 16,
               device: str = "auto", timeout: float = 600.0) -> FreshRun:
    """Spawn one `kimi ask` and time it (see the module docstring)."""
    run = FreshRun(engine=engine)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KIMI_DEBUG", None)
    start = time.perf_counter()
    proc = subprocess.Popen(ask_command(model, image, question, engine, tokens, device), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            _absorb(run, json.loads(line), start)
        except json.JSONDecodeError:
            continue
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    run.wall_total_s = time.perf_counter() - start
    run.exit_code = proc.returncode
    if run.exit_code != 0 and run.error is None:
        run.error = (err or "").strip().splitlines()[-1][:300] if (err or "").strip() else f"exit {run.exit_code}"
    if run.wall_first_text_s is not None and run.load_s is not None:
        run.ttft_excl_load_s = run.wall_first_text_s - run.load_s
    return run
