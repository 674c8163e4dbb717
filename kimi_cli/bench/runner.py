"""One benchmark run: fresh processes first (clean GPU), then load once and measure every engine.

Each stage is guarded: a failure is recorded in the report and the next stage still runs, and the JSON
is rewritten after every stage, so a run cut short by a time limit still leaves its numbers behind.
"""

from __future__ import annotations

import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.bench.report import ENGINES, BenchReport
from kimi_cli.bench.seen import KINDS
from kimi_cli.bench.ttft import QUESTION
from kimi_cli.errors import UsageError


@dataclass(frozen=True)
class BenchOptions:
    """What to measure (see `kimi bench --help`)."""

    model: str | None = None
    synthetic_full: bool = False
    synth_dir: Path | None = None
    contexts: tuple[int, ...] = (512, 8192, 32768)
    tokens: int = 128
    check_tokens: int = 64
    engines: tuple[str, ...] = ENGINES
    image_size: int = 1792
    question: str = QUESTION
    reps: int = 3
    fresh_runs: int = 1
    seen: tuple[str, ...] | None = None  # None: `--seen auto`
    seen_tokens: int = 512
    explore: bool = False
    profile_dir: Path | None = None
    device: str = "auto"
    json_path: Path | None = None
    argv: tuple[str, ...] = field(default_factory=tuple)


def parse_contexts(text: str) -> tuple[int, ...]:
    """`512,8192,32768` -> (512, 8192, 32768); `8K` and `32k` are accepted."""
    out = []
    for item in filter(None, (t.strip().lower() for t in text.split(","))):
        scale = 1024 if item.endswith("k") else 1
        try:
            value = int(item.rstrip("k")) * scale
        except ValueError:
            raise UsageError(f"--contexts {text}: not a list of token counts", hint="e.g. --contexts 512,8K,32K") from None
        if value < 1:
            raise UsageError(f"--contexts {text}: lengths must be positive")
        out.append(value)
    return tuple(out)


def parse_engines(text: str) -> tuple[str, ...]:
    """`plain,fast` -> ("plain", "fast"), checked against the known engines."""
    names = tuple(filter(None, (t.strip() for t in text.split(","))))
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise UsageError(f"--engines {text}: unknown engine", hint="use some of: " + ",".join(ENGINES))
    return names


def parse_seen(text: str) -> tuple[str, ...] | None:
    """`image,pdf,video` -> ("image", "pdf", "video"); empty or `0` -> () (the stage is off); `auto` ->
    None (every kind where our engine runs, none on the plain path: there a 16K-token PDF takes minutes)."""
    names = tuple(filter(None, (t.strip().lower() for t in text.split(","))))
    if names == ("auto",):
        return None
    if names in ((), ("0",)):
        return ()
    unknown = [n for n in names if n not in KINDS]
    if unknown:
        raise UsageError(f"--seen {text}: unknown kind {unknown[0]!r}", hint="use some of: " + ",".join(KINDS))
    return tuple(dict.fromkeys(names))


def _log(text: str) -> None:
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


class _Stages:
    """Runs named stages, recording failures and checkpointing the JSON after each."""

    def __init__(self, report: BenchReport, json_path: Path | None) -> None:
        self.report = report
        self.json_path = json_path

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        _log(f"{name} ...")
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one failed stage must not lose the others
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            self.report.errors.append(f"{name}: {type(exc).__name__}: {first}")
            traceback.print_exc(file=sys.stderr)
            return None
        finally:
            _log(f"{name} done in {time.perf_counter() - start:.1f} s")
            self.save()

    def save(self) -> None:
        if self.json_path is not None:
            import json

            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(self.report.to_json(), indent=2, default=str) + "\n")


def model_dir(opts: BenchOptions, report: BenchReport) -> str:
    """The model to load: `--model`, or a full-size synthetic checkpoint (written once, then reused)."""
    if not opts.synthetic_full:
        from kimi_cli import DEFAULT_MODEL

        return opts.model or DEFAULT_MODEL
    import torch

    from kimi_cli.model.synth_output import synthesize

    path = opts.synth_dir or Path(tempfile.gettempdir()) / "kimi-bench-full"
    if not (path / "config.json").is_file():
        start = time.perf_counter()
        # Room checked first, written all or nothing: an incomplete earlier attempt left nothing.
        synthesize(path, "full", seed=0, device="cuda" if torch.cuda.is_available() else "cpu", force=True)
        report.synth_s = time.perf_counter() - start
    return str(path)


def seen_kinds(opts: BenchOptions) -> tuple[str, ...]:
    """The inputs the user-seen stage runs: `--seen`, or with `auto` all of them where our engine runs."""
    from kimi_cli.bench import stages

    if opts.seen_tokens <= 0:
        return ()
    if opts.seen is None:
        return KINDS if stages.fast_engine_available(opts) else ()
    return opts.seen


def run_bench(opts: BenchOptions) -> BenchReport:
    """Measure everything `opts` asks for; returns the report (also written as JSON if asked)."""
    from kimi_cli.bench import stages
    from kimi_cli.bench.timing import environment

    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    report = BenchReport(env=environment(opts.argv or None), options=options)
    guard = _Stages(report, opts.json_path)
    # Not a guarded stage: without a model nothing else can run, and a KimiError here (no room for
    # the synthetic checkpoint, say) is the one line the user should see.
    report.model = model_dir(opts, report)
    with tempfile.TemporaryDirectory(prefix="kimi-bench-") as tmp:
        image = stages.prepare_image(Path(tmp), opts, report)
        for i in range(opts.fresh_runs):
            guard.run(f"fresh process {i + 1}", lambda: stages.fresh(opts, report, image))
        loaded = guard.run("load", lambda: stages.load(opts, report))
        if loaded is None:
            return report
        # First after the load, so that each kind's first turn is as near a fresh `kimi ask` as one process allows.
        for kind in seen_kinds(opts):
            guard.run(f"user-seen speed, {kind}",
                      lambda kind=kind: stages.user_seen(loaded, opts, report, Path(tmp), image, kind))
        guard.run("ttft pieces", lambda: stages.ttft(loaded, opts, report, image))
        guard.run("LocalEngine turns", lambda: stages.engine_turns(loaded, opts, report, image))
        guard.run("greedy check, image prompt", lambda: stages.image_greedy(loaded, opts, report, image))
        for ctx in opts.contexts:
            guard.run(f"decode at {ctx}", lambda ctx=ctx: stages.decode_context(loaded, opts, report, ctx))
        if opts.explore:
            guard.run("explore", lambda: stages.explore(loaded, opts, report, image))
    return report
