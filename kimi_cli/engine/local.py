"""The local engine: runs the loaded model with transformers in a worker thread and yields events.

The worker thread prefills the prompt (images included) and decodes token by token, putting token
ids on a queue. The consuming thread decodes them to text without ever splitting a UTF-8 character,
splits thinking from answer once (`ThinkingSplitter`), and yields events. Ctrl-C or `cancel()` sets a
flag the worker checks between tokens, so the terminal comes back within one token's time.

With `keep_cache=True` (the REPL) the KV cache of the conversation is kept between turns: a
follow-up whose prompt starts with the previous prompt reuses that prefix, images included.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from kimi_cli.conversation import Request
from kimi_cli.engine import Capabilities
from kimi_cli.errors import GenerationError, KimiError
from kimi_cli.events.thinking import ThinkingSplitter
from kimi_cli.events.types import (
    ErrorEvent,
    Event,
    Finished,
    Notice,
    StopReason,
    ThinkingDelta,
    Timings,
    Usage,
)
from kimi_cli.model.facts import THINKING_FORMAT

EngineMode = Literal["auto", "plain", "fast"]
_DONE = object()
_CUT = object()  # on the token queue: the thinking budget closes the thinking from here


@dataclass
class _Turn:
    """Mutable bookkeeping of one turn, shared by the worker and the consumer."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    reused: int = 0
    generated: int = 0
    cut: bool = False  # the thinking budget closed the thinking
    stop: StopReason = "end_turn"
    error: BaseException | None = None


class _Worker:
    """The engine's one generation thread, kept for the engine's lifetime.

    A thread's first CUDA work sets up per-thread library state (measured on an H100: about 120 ms
    before the first token); one long-lived thread pays that once per process, not once per turn.
    It is a daemon that is idle between turns (`stream` always waits for its job), so it never
    holds the interpreter at exit.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Any, threading.Event]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kimi-generate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            finally:
                done.set()
                # drop the finished job's closure (and the model it reaches) while idle
                job = done = None  # type: ignore[assignment]

    def stop(self) -> None:
        """End the thread once the current job is done."""
        self.submit(None).wait()
        self._thread.join(timeout=5)

    def submit(self, job: Any) -> threading.Event:
        """Run `job()` on the thread; the returned event is set when it has finished."""
        done = threading.Event()
        self._jobs.put((job, done))
        return done


class LocalEngine:
    """Streams events for requests against a `LoadedModel`."""

    def __init__(self, loaded: Any, mode: EngineMode = "auto", keep_cache: bool = False,
                 implicit_thinking: bool = True) -> None:
        self.loaded = loaded
        self.mode = mode
        self.keep_cache = keep_cache
        #: Text before any marker is thinking (Thinking checkpoints); else it is the answer.
        self.implicit_thinking = implicit_thinking
        self._cancel = threading.Event()
        self._worker: _Worker | None = None
        self._decoder: Any = None
        #: One-shot turns' fast decoder: its cache buffers and captured graphs serve the next turn
        #: that fits (a new one per turn would capture its graphs again: `--each`, the API, the bench).
        self._spare: Any = None
        self._fast_failed: str | None = None

    def cancel(self) -> None:
        """Stop the running turn after the current token."""
        self._cancel.set()

    def reset(self) -> None:
        """Forget the cached conversation context."""
        self._decoder = self._spare = None

    @property
    def capabilities(self) -> Capabilities:
        """Local: exact token counts, images processed here, a cache kept when asked for."""
        return Capabilities(keeps_cache=self.keep_cache, counts_tokens=True, local_images=True)

    def close(self) -> None:
        """Stop the generation thread and drop the model and cache (their memory can be freed)."""
        self.cancel()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._decoder = self._spare = None
        self.loaded = None

    @property
    def uses_fast_path(self) -> bool:
        """Whether generation runs on the GPU fast path (else the plain transformers forward)."""
        if self.mode == "plain" or self._fast_failed:
            return False
        from kimi_cli.engine.fast import available

        return available(self.loaded.model.device)

    def stream(self, request: Request) -> Iterator[Event]:
        """Generate an assistant turn for `request`, yielding deltas and then `Finished`."""
        from kimi_cli.model.prompt import build_prompt

        if self.loaded is None:
            raise GenerationError("the engine was closed", hint="make a new one")
        self._cancel.clear()
        start = time.perf_counter()
        lm = self.loaded
        prompt = build_prompt(request.messages, lm.tokenizer, lm.processor_config, request.system_prompt)
        preprocess_s = time.perf_counter() - start
        turn = _Turn(prompt_tokens=len(prompt.input_ids), image_tokens=prompt.image_tokens)
        tokens: queue.Queue[Any] = queue.Queue()
        if self._worker is None:
            self._worker = _Worker()
        done = self._worker.submit(lambda: self._work(prompt, request, turn, tokens))
        try:
            yield from self._consume(tokens, turn, start, preprocess_s)
        finally:
            # Also when the consumer stops early (closed pipe, generator closed): never leave the
            # worker running inside torch while the interpreter shuts down.
            if not done.is_set():
                self._cancel.set()
            done.wait()

    def _consume(self, tokens: queue.Queue[Any], turn: _Turn, start: float,
                 preprocess_s: float) -> Iterator[Event]:
        from kimi_cli.model.tokenizer import StreamDecoder

        decoder = StreamDecoder(self.loaded.tokenizer)
        splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=self.implicit_thinking)
        first = last = thinking_end = None
        cut = False
        while True:
            item = self._next(tokens)
            if item is _DONE:
                break
            if item is _CUT:
                cut = True
                continue
            if isinstance(item, Notice):
                yield item
                continue
            last = time.perf_counter()
            first = first or last
            yield from _marked(splitter.feed(decoder.push(item), tokens=1), cut)
            if splitter.saw_close and thinking_end is None:
                thinking_end = last
        yield from _marked(splitter.feed(decoder.flush()), cut)
        yield from _marked(splitter.finish(), cut)
        if turn.error is not None:
            yield _error_event(turn.error)
            return
        yield self._finished(turn, start, preprocess_s, first, last, splitter.thinking_tokens, thinking_end)

    def _next(self, tokens: queue.Queue[Any]) -> Any:
        """The next token id (or `_DONE`); Ctrl-C while waiting cancels the turn and keeps draining."""
        while True:
            try:
                return tokens.get(timeout=0.1)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                self.cancel()

    def _finished(self, turn: _Turn, start: float, preprocess_s: float, first: float | None,
                  last: float | None, thinking_tokens: int, thinking_end: float | None) -> Finished:
        now = time.perf_counter()
        rate = None
        if first is not None and last is not None and turn.generated > 1 and last > first:
            rate = (turn.generated - 1) / (last - first)
        timings = Timings(
            load_s=self.loaded.load_seconds, preprocess_s=preprocess_s,
            first_token_s=None if first is None else first - start,
            thinking_s=None if thinking_end is None or first is None else thinking_end - first,
            total_s=now - start,
        )
        usage = Usage(prompt_tokens=turn.prompt_tokens, image_tokens=turn.image_tokens,
                      generated_tokens=turn.generated, thinking_tokens=thinking_tokens,
                      reused_prompt_tokens=turn.reused)
        phases = getattr(self.loaded, "load_phases", None)
        return Finished(stop_reason=turn.stop, usage=usage, timings=timings, tokens_per_s=rate,
                        thinking_truncated=turn.cut,
                        load_phases=tuple(phases.as_dict().items()) if phases and phases.seconds else ())

    def _work(self, prompt: Any, request: Request, turn: _Turn, tokens: queue.Queue[Any]) -> None:
        try:
            import torch

            if self.loaded.model.device.type == "cpu":
                torch.set_num_threads(cpu_threads(_hidden_size(self.loaded), torch.get_num_threads()))
            with torch.inference_mode():
                self._generate(prompt, request, turn, tokens)
        except BaseException as exc:  # noqa: BLE001 - reported to the consumer as an event
            turn.stop, turn.error = "error", exc
            self.reset()
        finally:
            tokens.put(_DONE)

    def _generate(self, prompt: Any, request: Request, turn: _Turn, tokens: queue.Queue[Any]) -> None:
        decoder = self._decoder_for_turn()
        settings = request.settings
        try:
            logits = decoder.prefill(prompt, settings.max_new_tokens)
        except Exception as exc:
            if not _is_unsupported(exc):
                raise
            self._fast_failed = str(exc)
            tokens.put(Notice(f"fast engine unavailable ({exc}); using the plain transformers path", "warning"))
            decoder = self._decoder_for_turn()
            logits = decoder.prefill(prompt, settings.max_new_tokens)
        turn.reused = decoder.reused
        stop_ids = set(self.loaded.stop_ids)
        turn.stop = "max_tokens"
        steer = self._steering(settings)
        for token in decoder.tokens(logits, settings, tuple(stop_ids), settings.max_new_tokens, steer):
            if self._cancel.is_set():
                turn.stop = "cancelled"
                break
            if steer is not None and steer.cut and not turn.cut:
                turn.cut = True
                tokens.put(_CUT)
            turn.generated += 1
            if token in stop_ids:
                turn.stop = "end_turn"
                break
            tokens.put(token)
        if self.keep_cache:
            self._decoder = decoder

    def _steering(self, settings: Any) -> Any:
        """The turn's thinking budget and JSON grammar, or None when neither is asked for."""
        budget, schema = getattr(settings, "think_budget", None), getattr(settings, "json_schema", None)
        if budget is None and schema is None:
            return None
        from kimi_cli.engine.steering import Steering

        tokenizer = self.loaded.tokenizer
        grammar = None
        if schema is not None:
            from kimi_cli.engine.grammar import JsonGrammar

            grammar = JsonGrammar(tokenizer, json.loads(schema), thinks=self.implicit_thinking)
        return Steering(tokenizer, implicit_thinking=self.implicit_thinking, budget=budget, grammar=grammar)

    def _decoder_for_turn(self) -> Any:
        """The kept decoder (conversation cache) or a new one for the chosen path."""
        if self.keep_cache and self._decoder is not None:
            return self._decoder
        if self.mode == "fast" and not self.uses_fast_path:
            raise GenerationError("--decoder fast needs a CUDA GPU with Triton",
                                  hint="use --decoder plain (or auto) on this machine")
        if self.uses_fast_path:
            from kimi_cli.engine.fastpath import FastPathDecoder

            if self.keep_cache:
                return FastPathDecoder(self.loaded, keyed=True)
            if self._spare is None:
                self._spare = FastPathDecoder(self.loaded, keyed=False)
            return self._spare
        from kimi_cli.engine.plain import PlainDecoder

        return PlainDecoder(self.loaded, keyed=self.keep_cache)


#: Below this hidden size a CPU decode step's matrices are too small to share between threads: the
#: OpenMP team then costs more than it saves, and on a loaded machine (a busy core, CI, tests running
#: side by side) a team member that is descheduled stalls every barrier: 2 threads decoded the tiny
#: checkpoint at 8-280 tokens/s against 700+ on one thread.
SMALL_HIDDEN = 1024


def cpu_threads(hidden_size: int, available: int) -> int:
    """Intra-op threads for CPU generation: one for small models, all available otherwise."""
    return 1 if hidden_size < SMALL_HIDDEN else max(1, available)


def _hidden_size(loaded: Any) -> int:
    config = loaded.model.config
    return int(getattr(getattr(config, "text_config", config), "hidden_size", SMALL_HIDDEN))


def _is_unsupported(exc: BaseException) -> bool:
    """Whether the fast path refused this model (then the plain path takes over)."""
    return type(exc).__name__ == "UnsupportedModel" and type(exc).__module__.startswith("kimi_cli.engine.fast")


def _marked(deltas: list[Any], cut: bool) -> list[Any]:
    """Thinking deltas after the budget's cut say so (for the collapsed line's "(budget)")."""
    if not cut:
        return deltas
    return [replace(d, truncated=True) if isinstance(d, ThinkingDelta) else d for d in deltas]


def _error_event(exc: BaseException) -> ErrorEvent:
    """Map an exception from the worker to a one-line error event (traceback kept for --debug)."""
    detail = "".join(traceback.format_exception(exc))
    if isinstance(exc, KimiError):
        return ErrorEvent(message=exc.message, hint=exc.hint, exit_code=exc.exit_code, detail=detail)
    name = type(exc).__name__
    if "OutOfMemory" in name:
        return ErrorEvent(message="out of GPU memory during generation",
                          hint="use fewer or smaller images (--max-image-tokens) or a shorter --max-new-tokens",
                          exit_code=GenerationError.exit_code, detail=detail)
    first = (str(exc).strip().splitlines() or [name])[0][:200]
    return ErrorEvent(message=f"generation failed: {name}: {first}", hint="rerun with --debug for details",
                      exit_code=GenerationError.exit_code, detail=detail)
