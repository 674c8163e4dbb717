"""`kimi bench`: side-by-side speed and memory of plain transformers, its static cache, and our engine.

The pieces are plain functions over a `LoadedModel` so that `benchmarks/kimi_bench.py` (standalone) and
`kimi bench` (the CLI) run the same code: `runner.run_bench(BenchOptions(...))` returns a `BenchReport`
whose `markdown()` is the table and `to_json()` the full record. Nothing here imports torch at import time.
"""

from __future__ import annotations
