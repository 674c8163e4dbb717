"""The OpenAI-compatible client engine against a tiny real loopback server replaying documented streams.

The fixtures in tests/openai_sse/ are written from vLLM's and SGLang's documented stream formats;
the server here is the standard library's, serving them over real sockets (no mocks of httpx).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.engine.remote import RemoteEngine
from kimi_cli.errors import EXIT_GENERATION, EXIT_MEDIA, EXIT_MODEL, EXIT_USAGE
from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, ThinkingDelta
from kimi_cli.media.types import ImagePart, TextPart

FIXTURES = Path(__file__).parent / "openai_sse"


class _Handler(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions with whatever `server.script` says."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length", 0))
        self.server.requests.append((dict(self.headers), json.loads(self.rfile.read(length))))
        kind, payload = self.server.script
        if kind == "status":
            status, body = payload
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if kind == "sleep":
            time.sleep(payload)
            return
        self.wfile.write(payload.encode())
        self.wfile.flush()


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    httpd.script = ("sse", "")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _base(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def _run(httpd, script, **kwargs):
    httpd.script = script
    engine = RemoteEngine(_base(httpd), "kimi-vl", "sekret", **kwargs)
    request = Request((Message("user", (ImagePart(Image.new("RGB", (64, 48), "red"), "red.png"),
                                        TextPart("What is it?"))),),
                      GenerationSettings(max_new_tokens=50, temperature=0.0, seed=3))
    try:
        return list(engine.stream(request))
    finally:
        engine.close()


def _split(events):
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer


@pytest.mark.parametrize(("fixture", "implicit", "reasoning_tokens"), [
    ("vllm_reasoning.sse", False, 9),
    ("sglang_reasoning_content.sse", False, 9),
    ("vllm_inline_markers.sse", False, None),
    ("vllm_inline_markers.sse", True, None),
])
def test_three_stream_shapes_split_the_same(server, fixture, implicit, reasoning_tokens):
    events = _run(server, ("sse", (FIXTURES / fixture).read_text(encoding="utf-8")), implicit_thinking=implicit)
    assert _split(events) == ("The image shows a cat on a sofa.", "A tabby cat.")
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.stop_reason == "end_turn"
    assert finished.usage.prompt_tokens == 1210
    assert finished.usage.generated_tokens in (14, 16)
    if reasoning_tokens is not None:
        assert finished.usage.thinking_tokens == reasoning_tokens
    else:
        assert finished.usage.thinking_tokens > 0  # counted from the stream's chunks


def test_request_carries_the_image_as_data_and_the_settings(server):
    _run(server, ("sse", (FIXTURES / "vllm_reasoning.sse").read_text(encoding="utf-8")))
    headers, body = server.requests[-1]
    assert headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "kimi-vl" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (50, 0.0, 3)
    content = body["messages"][-1]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "What is it?"}
    assert body["messages"][0]["role"] == "user"  # no system prompt given: the server's default applies


_LENGTH = ('data: {"choices":[{"index":0,"delta":{"content":"Half an ans"},"finish_reason":null}]}\n\n'
           'data: {"choices":[{"index":0,"delta":{"content":"wer"},"finish_reason":"length"}]}\n\n'
           "data: [DONE]\n\n")


def test_length_finish_is_max_tokens(server):
    events = _run(server, ("sse", _LENGTH))
    assert _split(events) == ("", "Half an answer")
    assert events[-1].stop_reason == "max_tokens"


@pytest.mark.parametrize(("status", "body", "code", "needle"), [
    (401, {"error": {"message": "invalid API key", "type": "authentication_error"}}, EXIT_USAGE, "invalid API key"),
    (404, {"object": "error", "message": "The model `kimi-vl` does not exist.", "type": "NotFoundError",
           "code": 404}, EXIT_MODEL, "does not exist"),
    (413, {"error": {"message": "request body too large"}}, EXIT_MEDIA, "too large"),
    (503, {"error": {"message": "queue full"}}, EXIT_GENERATION, "queue full"),
    (400, {"error": {"message": "This model's maximum context length is 131072 tokens"}}, EXIT_GENERATION,
     "maximum context length"),
])
def test_http_errors_map_to_one_line_and_exit_code(server, status, body, code, needle):
    events = _run(server, ("status", (status, body)))
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert events[0].exit_code == code
    assert needle in events[0].message and "\n" not in events[0].message
    assert events[0].hint


def test_stream_that_breaks_off_is_a_generation_error(server):
    events = _run(server, ("sse", 'data: {"choices":[{"index":0,"delta":{"content":"Hal"}}]}\n\n'))
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].exit_code == EXIT_GENERATION and "broke off" in events[-1].message


def test_error_inside_the_stream(server):
    events = _run(server, ("sse", 'data: {"error": {"message": "CUDA out of memory", "code": 500}}\n\n'))
    assert isinstance(events[-1], ErrorEvent) and "CUDA out of memory" in events[-1].message


def test_read_timeout(server):
    events = _run(server, ("sleep", 1.5), read_timeout=0.3)
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].exit_code == EXIT_GENERATION and "sent nothing" in events[-1].message


def test_connection_refused_is_a_model_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = RemoteEngine(f"http://127.0.0.1:{port}/v1", "kimi-vl")
    events = list(engine.stream(Request((Message.text("user", "hi"),))))
    assert len(events) == 1 and events[0].exit_code == EXIT_MODEL
    assert "cannot connect" in events[0].message


def test_bad_url_is_a_usage_error():
    events = list(RemoteEngine("ftp://example/v1", "m").stream(Request((Message.text("user", "hi"),))))
    assert events[0].exit_code == EXIT_USAGE


def test_keepalive_comments_and_other_fields_are_skipped(server):
    text = (FIXTURES / "vllm_reasoning.sse").read_text(encoding="utf-8")
    events = _run(server, ("sse", ": keep-alive\n\nevent: message\nid: 1\n" + text.replace("\n\n", "\n\n: ping\n\n", 2)))
    assert _split(events) == ("The image shows a cat on a sofa.", "A tabby cat.")
    assert events[-1].usage.generated_tokens == 14


def test_request_carries_the_thinking_budget_and_the_schema(server):
    server.script = ("sse", (FIXTURES / "vllm_reasoning.sse").read_text(encoding="utf-8"))
    engine = RemoteEngine(_base(server), "kimi-vl", "sekret")
    schema = {"type": "object", "properties": {"a": {"enum": [1, 2]}}}
    request = Request((Message.text("user", "hi"),),
                      GenerationSettings(max_new_tokens=50, think_budget=7, json_schema=json.dumps(schema)))
    try:
        list(engine.stream(request))
    finally:
        engine.close()
    _, body = server.requests[-1]
    assert body["thinking_token_budget"] == 7
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}}
