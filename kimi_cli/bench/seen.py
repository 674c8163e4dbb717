"""User-seen speed (issue 14): tokens/s as `kimi ask` delivers them, next to the decode figure at that context.

Each kind of input (a 1792x1792 image, a 20-page PDF of about 16K prompt tokens, a video of about 2K)
goes through the path `kimi ask` takes: the app layer plans and loads the file and builds the user
message and the request (greedy, `tokens` new tokens), and `render_turn` streams `LocalEngine.stream`
through the real plain renderer into /dev/null (thinking shown, so every token is written and
flushed). The clock is on the consumer side, after the renderer has written each piece of text:
user-seen tok/s = (tokens shown - 1) / (last piece - first piece). Each prompt runs twice on one new
engine (as a fresh `kimi ask` makes): the first run pays first-use costs, the second is warm.

The decode figure is the bench's decode stage (`fast_decode`: one host read per token, and
`replay_rate`: graph replays alone) on random tokens at prompt + tokens/2 positions, the mean context
of the answer. Gaps between pieces (median, p90, max and where the max fell) show a stall such as a
graph capture or a compile; the seconds spent capturing are read off `GraphRunner.ensure` by a
wrapper that only times it, put back after the turn.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.events.types import AnswerDelta, Event, ThinkingDelta

KINDS = ("image", "pdf", "video")
#: Pages of the bench's PDF: at the default budget each plans 800 tokens, about 16.2K in all.
PDF_PAGES = 20
#: Frames per second read from the clip: 20 frames of `examples/clip.mp4`, about 2.4K prompt tokens.
VIDEO_FPS = 5.0
QUESTIONS = {"image": "Describe this picture in detail.", "pdf": "Summarise this document in detail.",
             "video": "Describe what happens in this video in detail."}


@dataclass(frozen=True)
class SeenSpec:
    """What one kind's measurement uses (the CLI's defaults; the tests shrink them)."""

    tokens: int = 512
    image: Path | None = None
    pdf_pages: int = PDF_PAGES
    max_image_tokens: int | None = None  # None: the setting's default (16384)
    video_fps: float = VIDEO_FPS
    decode_tokens: int = 128


@dataclass
class SeenRun:
    """One turn as the consumer saw it."""

    first_token_s: float | None = None
    generated: int = 0  # the engine's count (a stop token included)
    shown: int = 0  # tokens whose text reached the renderer
    pieces: int = 0  # text events written (one per token unless a character spans tokens)
    tokens_per_s: float | None = None  # user-seen
    engine_tokens_per_s: float | None = None  # `Finished.tokens_per_s`: the engine's own clock
    gap_median_ms: float | None = None
    gap_p90_ms: float | None = None
    gap_max_ms: float | None = None
    gap_max_after: int | None = None  # the max gap came after this many pieces
    captures: int | None = None  # decode graphs captured during the turn (None: not the fast path)
    capture_s: float | None = None
    prompt_tokens: int = 0
    image_tokens: int = 0
    stop_reason: str = ""
    error: str | None = None


@dataclass
class SeenRow:
    """One kind of input: two turns and the decode figure at the same context."""

    kind: str
    source: str
    engine: str
    tokens: int
    planned_tokens: int = 0
    media_s: float | None = None  # plan + render/decode the file (before the engine)
    first: SeenRun = field(default_factory=SeenRun)
    warm: SeenRun = field(default_factory=SeenRun)
    decode_context: int | None = None
    decode_tokens_per_s: float | None = None
    replay_tokens_per_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        """The prompt's exact length (the engine's count)."""
        return self.warm.prompt_tokens or self.first.prompt_tokens

    @property
    def ratio(self) -> float | None:
        """Warm user-seen tok/s over decode tok/s at the same context (issue 14's target: >= 0.9)."""
        if self.warm.tokens_per_s is None or not self.decode_tokens_per_s:
            return None
        return self.warm.tokens_per_s / self.decode_tokens_per_s


class ClockedRenderer:
    """Wraps a renderer; notes the host clock after each non-empty text piece has been handled."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.times: list[float] = []

    def start(self, meta: Any) -> None:
        """Pass on."""
        self.inner.start(meta)

    def handle(self, event: Event) -> None:
        """Pass on, then stamp text pieces (the renderer's write and flush are inside the stamp)."""
        self.inner.handle(event)
        if isinstance(event, (AnswerDelta, ThinkingDelta)) and event.text:
            self.times.append(time.perf_counter())

    def close(self) -> None:
        """Pass on."""
        self.inner.close()


@contextlib.contextmanager
def capture_clock() -> Iterator[list[float]]:
    """Seconds of each decode-graph capture while inside (times `GraphRunner.ensure`, changes nothing)."""
    from kimi_cli.engine.fast import graphs

    original = getattr(graphs.GraphRunner, "ensure", None)
    spent: list[float] = []
    if original is None:
        yield spent
        return

    def timed(runner: Any, params: Any) -> Any:
        before = len(runner.graphs)
        t0 = time.perf_counter()
        key = original(runner, params)
        if len(runner.graphs) > before:
            spent.append(time.perf_counter() - t0)
        return key

    graphs.GraphRunner.ensure = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        graphs.GraphRunner.ensure = original  # type: ignore[method-assign]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fill_gaps(run: SeenRun, times: list[float]) -> None:
    """Median, p90 and max gap between text pieces, in ms, and where the max fell."""
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    if not gaps:
        return
    run.gap_median_ms = 1000 * _percentile(gaps, 0.5)
    run.gap_p90_ms = 1000 * _percentile(gaps, 0.9)
    run.gap_max_ms = 1000 * max(gaps)
    run.gap_max_after = gaps.index(max(gaps)) + 1


def summarize(start: float, times: list[float], outcome: Any, captures: list[float] | None) -> SeenRun:
    """A `SeenRun` from the turn's start, the pieces' times and `render_stream`'s outcome."""
    run = SeenRun(pieces=len(times), error=outcome.error.message if outcome.error else None)
    fin = outcome.finished
    if fin is not None:
        run.stop_reason, run.generated = fin.stop_reason, fin.usage.generated_tokens
        run.prompt_tokens, run.image_tokens = fin.usage.prompt_tokens, fin.usage.image_tokens
        run.engine_tokens_per_s = fin.tokens_per_s
        run.shown = run.generated - (1 if fin.stop_reason == "end_turn" else 0)
    if times:
        run.first_token_s = times[0] - start
    if len(times) > 1 and run.shown > 1 and times[-1] > times[0]:
        run.tokens_per_s = (run.shown - 1) / (times[-1] - times[0])
    fill_gaps(run, times)
    if captures is not None:
        run.captures, run.capture_s = len(captures), sum(captures)
    return run


def run_turn(engine: Any, request: Any, sink: Any, fast: bool) -> SeenRun:
    """One turn through `render_turn` and the plain renderer writing to `sink`, clocked by the consumer."""
    from kimi_cli.app.turn import render_turn
    from kimi_cli.render import Environment, RenderMeta, make_renderer

    clocked = ClockedRenderer(make_renderer("plain", "show", Environment(stdout=sink, stderr=sink)))
    with capture_clock() as captures:
        start = time.perf_counter()
        outcome = render_turn(engine, request, clocked, RenderMeta(backend="local"))
    return summarize(start, clocked.times, outcome, captures if fast else None)


def kind_input(kind: str, spec: SeenSpec, folder: Path) -> tuple[Path, Any, str]:
    """The file for `kind`, its media flags and how the report names it."""
    from kimi_cli.app.media import MediaFlags
    from kimi_cli.bench.seen_media import video_input, write_pdf

    if kind == "image":
        if spec.image is None:
            raise ValueError("the image kind needs SeenSpec.image")
        return spec.image, MediaFlags(), f"PNG {spec.image.name}"
    if kind == "pdf":
        return write_pdf(folder, spec.pdf_pages), MediaFlags(max_pages=spec.pdf_pages), f"{spec.pdf_pages}-page PDF"
    if kind == "video":
        path, label = video_input(folder)
        return path, MediaFlags(fps=spec.video_fps), f"{label}, {spec.video_fps:g} fps"
    raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def settings_for(model: str, spec: SeenSpec, mode: str) -> Any:
    """The settings a `kimi ask --temperature 0 -n TOKENS` would have (defaults otherwise)."""
    from kimi_cli.settings import Settings

    extra = {} if spec.max_image_tokens is None else {"max_image_tokens": spec.max_image_tokens}
    return Settings(model=model, max_new_tokens=spec.tokens, temperature=0.0, seed=0, decoder=mode, **extra)


def build_request(row: SeenRow, settings: Any, path: Path, flags: Any) -> Any:
    """Plan and load the file, build the message and request as `kimi ask` does; notes the media time."""
    from kimi_cli.app import media as app_media
    from kimi_cli.app.turn import make_request

    prompt = QUESTIONS[row.kind]
    t0 = time.perf_counter()
    plan = app_media.plan_inputs([str(path)], app_media.media_options(settings, flags), settings.model, prompt)
    items, notes = app_media.load_planned(plan)
    row.media_s = time.perf_counter() - t0
    row.planned_tokens = plan.total_tokens
    row.notes.extend(notes)
    return make_request((app_media.build_user_message(items, prompt),), settings)


def decode_at(loaded: Any, row: SeenRow, context: int, n: int) -> None:
    """The decode stage's figures at `context` random tokens: `fast_decode` and, on CUDA, `replay_rate`."""
    import torch

    from kimi_cli.bench.decode import fast_decode, random_context, replay_rate
    from kimi_cli.bench.timing import free_cuda

    model = loaded.model
    ids = random_context(model.config.text_config.vocab_size, context, model.device)
    with torch.inference_mode():
        embeds = model.model.language_model.embed_tokens(ids)
        run, _, dec = fast_decode(loaded, embeds, n)
        row.decode_context, row.decode_tokens_per_s = context, run.tokens_per_s
        row.notes.extend(f"decode: {note}" for note in run.notes)
        if dec.graphs is not None:
            row.replay_tokens_per_s = replay_rate(dec, n)
    del dec, embeds
    free_cuda()


def measure(loaded: Any, model: str, kind: str, spec: SeenSpec, folder: Path, mode: str) -> SeenRow:
    """Two turns of `kind` on a new engine (first, warm), then the decode figure at their context."""
    from kimi_cli.app.engines import local_engine

    path, flags, source = kind_input(kind, spec, folder)
    row = SeenRow(kind=kind, source=source, engine=mode, tokens=spec.tokens)
    settings = settings_for(model, spec, mode)
    request = build_request(row, settings, path, flags)
    engine = local_engine(loaded, mode)
    try:
        with open(os.devnull, "w", encoding="utf-8") as sink:  # a file, not a terminal: as in a pipe
            row.first = run_turn(engine, request, sink, mode == "fast")
            row.warm = run_turn(engine, request, sink, mode == "fast")
    finally:
        engine.close()
    if row.prompt_tokens and mode == "fast":
        from kimi_cli.engine.fast import bucket_length

        row.notes.append(f"turns: cache {bucket_length(row.prompt_tokens + spec.tokens + 1)} positions")
    if row.prompt_tokens:
        decode_at(loaded, row, row.prompt_tokens + spec.tokens // 2, spec.decode_tokens)
    return row
