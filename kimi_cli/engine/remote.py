"""An engine that talks to any OpenAI-compatible server: `kimi serve`, vLLM, SGLang.

It implements the same protocol as `LocalEngine` (`stream`, `cancel`, `reset`, `close`): the request
is sent as OpenAI chat messages (`kimi_cli.engine.wire`), the SSE stream is read with httpx, and
`kimi_cli.engine.openai_stream` turns it into the same events the local engine yields, so every
renderer, exit code and JSON field is the same whatever the backend.

Failures become one `ErrorEvent` with the exit code of the matching `KimiError`: the server cannot
be reached or the model is unknown (model, 4), a wrong or missing key (usage, 2), inputs too large
for the server (media, 3), a timeout, a busy server or a stream that broke off (generation, 1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from kimi_cli.conversation import Request
from kimi_cli.engine.openai_stream import StreamError, StreamState, error_message
from kimi_cli.errors import GenerationError, KimiError, MediaError, ModelLoadError, UsageError
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Event, Finished, Timings
from kimi_cli.textsafe import json_loads

#: Seconds to wait for a connection, and for each piece of the stream (the queue of a busy
#: `kimi serve` or a long prefill can keep the first byte waiting for a while).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0


class RemoteEngine:
    """Streams events for requests from an OpenAI-compatible `/v1/chat/completions` endpoint."""

    #: What `--format json` reports as the turn's `backend`.
    backend = "server"

    def __init__(self, api_base: str, model: str, api_key: str | None = None, *,
                 implicit_thinking: bool = False, processor: Any = None,
                 read_timeout: float = READ_TIMEOUT_S, label: str = "server") -> None:
        self.api_base = api_base.rstrip("/")
        self.model = model
        self.api_key = api_key
        #: Inline text before any marker is thinking (a Thinking checkpoint served without a reasoning parser).
        self.implicit_thinking = implicit_thinking
        self.processor = processor
        self.read_timeout = read_timeout
        self.label = label
        self._cancelled = False
        self._client: Any = None

    @property
    def capabilities(self) -> Any:
        """The server keeps (and keys) its own cache and counts tokens; images are decoded here."""
        from kimi_cli.engine import Capabilities

        return Capabilities(keeps_cache=self.label == "server", counts_tokens=True, local_images=True)

    def cancel(self) -> None:
        """Stop the running turn: the connection is closed, which cancels the server's generation."""
        self._cancelled = True

    def reset(self) -> None:
        """Nothing to forget here: the server keeps (and keys) its own cache."""

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def stream(self, request: Request) -> Iterator[Event]:
        """Send `request`, yield its deltas, then one `Finished` (or `ErrorEvent`)."""
        self._cancelled = False
        start = time.perf_counter()
        try:
            body = self._body(request)
        except KimiError as exc:
            yield ErrorEvent(exc.message, exc.hint, exc.exit_code)
            return
        preprocess_s = time.perf_counter() - start
        try:
            yield from self._send(body, start, preprocess_s)
        except KimiError as exc:
            yield ErrorEvent(exc.message, exc.hint, exc.exit_code)

    def _body(self, request: Request) -> dict[str, Any]:
        from kimi_cli.engine.wire import messages_to_openai

        s = request.settings
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages_to_openai(request.messages, request.system_prompt, self.processor),
            "max_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
            "stream": True, "stream_options": {"include_usage": True},
        }
        if s.seed is not None:
            body["seed"] = s.seed
        from kimi_cli.engine.wire_steering import steering_fields

        body.update(steering_fields(s))  # thinking_token_budget, response_format (vLLM/SGLang names)
        return body

    def _http(self) -> Any:
        httpx = load_httpx()
        if self._client is None:
            timeout = httpx.Timeout(self.read_timeout, connect=CONNECT_TIMEOUT_S)
            # Plain http (a local `kimi serve`, a server on the LAN) never negotiates TLS, so it skips
            # loading the CA bundle (80 ms of every start); https verifies as always.
            tls = {} if self.api_base.lower().startswith("https:") else {"verify": False}
            self._client = httpx.Client(timeout=timeout, trust_env=False, **tls)
        return self._client

    def _send(self, body: dict[str, Any], start: float, preprocess_s: float) -> Iterator[Event]:
        httpx = load_httpx()
        url = f"{self.api_base}/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        state = StreamState(implicit_thinking=self.implicit_thinking)
        marks: dict[str, float] = {}
        try:
            with self._http().stream("POST", url, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    raise http_error(response.status_code, _read_error(response), self.api_base, self.model)
                for chunk in sse_chunks(response.iter_lines()):
                    if self._cancelled:
                        break
                    if not chunk:
                        continue  # a keep-alive: only a chance to notice a cancel while queued
                    events = state.feed(chunk)
                    _mark(marks, events)
                    yield from events
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(exc, self.api_base, self.read_timeout) from None
        except StreamError as exc:
            raise GenerationError(f"{self.api_base}: the server failed: {exc}",
                                  hint="see the server's log") from None
        except KeyboardInterrupt:
            self._cancelled = True
        yield from state.finish()
        yield self._finished(state, start, preprocess_s, marks)

    def _finished(self, state: StreamState, start: float, preprocess_s: float, marks: dict[str, float]) -> Finished:
        if not self._cancelled and state.stop is None:
            raise GenerationError(f"{self.api_base}: the stream broke off before the end of the reply",
                                  hint="the server may have stopped or restarted; see its log")
        now = time.perf_counter()
        first, answer = marks.get("first"), marks.get("answer")
        usage = state.final_usage(fallback_generated=state.chunks)
        stop = "cancelled" if self._cancelled else state.stop or "end_turn"
        rate = None
        if first is not None and usage.generated_tokens > 1 and now > first:
            rate = (usage.generated_tokens - 1) / (now - first)
        thinking_s = answer - first if first is not None and answer is not None and usage.thinking_tokens else None
        timings = Timings(preprocess_s=preprocess_s, first_token_s=None if first is None else first - start,
                          thinking_s=thinking_s, total_s=now - start)
        return Finished(stop_reason=stop, usage=usage, timings=timings, tokens_per_s=rate)


def _mark(marks: dict[str, float], events: list[Event]) -> None:
    """Note when the first text and the first answer text arrived."""
    if not events:
        return
    now = time.perf_counter()
    marks.setdefault("first", now)
    if "answer" not in marks and any(isinstance(e, AnswerDelta) for e in events):
        marks["answer"] = now


def sse_chunks(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """JSON objects from the `data:` lines of a server-sent event stream, up to `[DONE]`.

    A comment line (`: keep-alive`) yields an empty dict, so the reader can check for a cancel.
    """
    for line in lines:
        if line.startswith(":"):
            yield {}
            continue
        if not line.startswith("data:"):
            continue  # blank separators, `event:`/`id:` fields
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if not data:
            continue
        try:
            chunk = json_loads(data)
        except json.JSONDecodeError:
            raise StreamError(f"unreadable stream data: {data[:80]!r}") from None
        if isinstance(chunk, dict):
            yield chunk


def _read_error(response: Any) -> str:
    try:
        response.read()
        return error_message(response.json())
    except Exception:  # noqa: BLE001 - any body at all: say what we can
        text = getattr(response, "text", "") or ""
        return text.strip().splitlines()[0][:200] if text.strip() else f"HTTP {response.status_code}"


def http_error(status: int, message: str, api_base: str, model: str) -> KimiError:
    """The `KimiError` for an HTTP error status from an OpenAI-compatible server."""
    where = f"{api_base}: {message}"
    if status in (401, 403):
        return UsageError(where, hint="pass the server's key with --api-key or KIMI_API_KEY")
    if status == 404:
        return ModelLoadError(where, hint=f"the server has no model {model!r}; "
                              "list its models at /v1/models and pass --api-model")
    if status == 413:
        return MediaError(where, hint="send fewer or smaller inputs (--pages, --max-frames, --max-image-tokens)")
    if status in (429, 503):
        return GenerationError(where, hint="the server is busy; try again shortly")
    if status in (400, 422):
        return GenerationError(where, hint="the server refused the request")
    return GenerationError(f"{api_base}: HTTP {status}: {message}", hint="see the server's log")


def load_httpx() -> Any:
    """httpx, without its own command line: its `httpx._main` imports click, pygments and rich's
    console at import time (90 ms of a warm `kimi ask`'s start). Marking that module absent makes httpx
    take its documented fallback for a missing `httpx[cli]`; the client library is unchanged."""
    import sys

    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx

    return httpx


def transport_error(exc: Exception, api_base: str, read_timeout: float) -> KimiError:
    """The `KimiError` for a failed connection, a timeout or a broken stream."""
    httpx = load_httpx()
    if isinstance(exc, httpx.ConnectTimeout):
        return ModelLoadError(f"{api_base}: no answer within {CONNECT_TIMEOUT_S:g} s",
                              hint="check the address and that the server is running")
    if isinstance(exc, httpx.ConnectError):
        return ModelLoadError(f"{api_base}: cannot connect (connection refused or host unreachable)",
                              hint="start the server (`kimi serve`) or fix --api-base / KIMI_API_BASE")
    if isinstance(exc, httpx.TimeoutException):
        return GenerationError(f"{api_base}: the server sent nothing for {read_timeout:g} s",
                               hint="the server may be overloaded or stuck; see its log")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return GenerationError(f"{api_base}: the stream broke off before the end of the reply",
                               hint="the server may have stopped or restarted; see its log")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return UsageError(f"{api_base}: not a valid http(s) URL", hint="use e.g. --api-base http://host:8000/v1")
    return GenerationError(f"{api_base}: {type(exc).__name__}: {exc}", hint="see the server's log")
