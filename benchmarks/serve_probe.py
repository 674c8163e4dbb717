"""Where a warm `kimi serve` request's time goes before the first text (one GPU run, or the tiny CPU check).

    PYTHONPATH=$PWD python benchmarks/serve_probe.py --model DIR [--device cuda] [--image examples/chelsea.png]

1. In process: the engine `kimi serve` builds (`make_local_engine(settings, keep_cache=True)`), fed the
   request exactly as the server parses it from the `kimi` client's payload; 4 timed requests, a 5th
   under cProfile in the engine's worker thread up to the first token. Engine pieces are timed by
   wrapping product functions (with `torch.cuda.synchronize()` after each, so GPU time lands there).
2. Over HTTP: a real `kimi serve` subprocess, 4 httpx requests with the client's own payload, then two
   `kimi ask --backend server` processes to their first output byte.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "What is in this picture?"
SUMMARY: list[tuple[str, float]] = []


def ms(seconds: float | None) -> str:
    return "   -  " if seconds is None else f"{seconds * 1e3:7.1f}"


def timed(label: str, fn: Any, *args: Any) -> Any:
    t = time.perf_counter()
    out = fn(*args)
    SUMMARY.append((label, time.perf_counter() - t))
    return out


class Spans:
    """Wraps product callables to time them (per request); syncs CUDA after each call."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.now = cuda, {}

    def sync(self) -> None:
        if self.cuda:
            __import__("torch").cuda.synchronize()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        orig = getattr(owner, name)

        @functools.wraps(orig)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                self.sync()
                self.now[label] = self.now.get(label, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)

    def wrap_capture(self, runner_cls: Any) -> None:
        orig = runner_cls.ensure

        def ensure(runner: Any, params: Any) -> Any:
            n, t = len(runner.graphs), time.perf_counter()
            key = orig(runner, params)
            if len(runner.graphs) > n:  # a capture happened (else ensure is a dict lookup per replay)
                self.sync()
                self.now["graph capture"] = self.now.get("graph capture", 0.0) + time.perf_counter() - t
            return key
        runner_cls.ensure = ensure


def instrument(spans: Spans) -> None:
    import kimi_cli.engine.fastpath as fp
    import kimi_cli.engine.plain as plain
    import kimi_cli.model.prompt as prompt
    from kimi_cli.engine.local import LocalEngine

    spans.wrap(prompt, "build_prompt", "build_prompt (consumer thread)")
    spans.wrap(LocalEngine, "_decoder_for_turn", "_decoder_for_turn")
    spans.wrap(LocalEngine, "_steering", "_steering")
    spans.wrap(fp.FastPathDecoder, "prefill", "FastPathDecoder.prefill")
    spans.wrap(fp.FastPathDecoder, "_room_for", "  _room_for (new FastDecoder?)")
    spans.wrap(fp, "prompt_keys", "  prompt_keys (blake2b keys)")
    spans.wrap(fp, "prompt_embeddings", "  prompt_embeddings")
    spans.wrap(fp, "image_features", "    image_features (vision)")
    spans.wrap(plain.PlainDecoder, "prefill", "PlainDecoder.prefill")
    try:
        from kimi_cli.engine.fast.decoder import FastDecoder
        from kimi_cli.engine.fast.graphs import GraphRunner
    except Exception as exc:  # noqa: BLE001 - a CPU-only torch may lack pieces; the plain path is timed
        print(f"(fast path not instrumented: {type(exc).__name__}: {exc})")
        return
    spans.wrap(FastDecoder, "__init__", "    FastDecoder.__init__ (alloc)")
    spans.wrap(FastDecoder, "prefill", "  FastDecoder.prefill (LM forward)")
    spans.wrap_capture(GraphRunner)


def client_request(model: str, image: str) -> Any:
    """The `Request` `kimi ask IMAGE PROMPT --temperature 0 --max-new-tokens 64` builds (client side)."""
    from kimi_cli.app import media as app_media
    from kimi_cli.app.turn import make_request
    from kimi_cli.config import load_settings

    settings = load_settings({"model": model, "backend": "server", "temperature": 0.0, "max_new_tokens": 64,
                              "thinking": "show"})
    opts = app_media.media_options(settings)
    plan = timed("client: plan_inputs", app_media.plan_inputs, [image], opts, settings.model, PROMPT)
    items, _ = timed("client: load_planned (decode image)", app_media.load_planned, plan)
    return make_request((app_media.build_user_message(items, PROMPT),), settings)


def payload(request: Any, model: str) -> dict[str, Any]:
    """The JSON body `RemoteEngine` sends (image resized, PNG-encoded, base64; the token goes in a header)."""
    from kimi_cli.config import load_settings
    from kimi_cli.engine.remote import RemoteEngine
    from kimi_cli.model.image_processor import processor_config_for

    proc = timed("client: processor_config_for", processor_config_for, model)
    model_id = str(load_settings({"model": model}).model)  # the id `kimi serve` publishes (its model spec)
    remote = RemoteEngine("http://127.0.0.1/v1", model_id, None, processor=proc)
    body = timed("client: payload (PNG + base64)", remote._body, request)
    timed("client: json.dumps(body)", json.dumps, body)
    return body


def local_phase(args: argparse.Namespace, body: dict[str, Any]) -> None:
    from kimi_cli.app.engines import make_local_engine
    from kimi_cli.app.turn import generation_settings
    from kimi_cli.config import load_settings
    from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, ThinkingDelta
    from kimi_cli.server.config import ServeConfig
    from kimi_cli.server.main import ALIASES, prompt_counter
    from kimi_cli.server.protocol import parse_chat

    settings = load_settings({"model": args.model, "device": args.device})  # as `kimi serve --model M`
    t = time.perf_counter()
    engine = make_local_engine(settings, keep_cache=True)
    print(f"load {time.perf_counter() - t:.1f} s; fast path: {engine.uses_fast_path}")
    config = ServeConfig(max_new_tokens=settings.max_new_tokens)
    call = timed("server: parse_chat (json+b64+PNG)", parse_chat, json.dumps(body).encode(), config, (str(settings.model), *ALIASES),
                 generation_settings(settings))
    count = prompt_counter(engine)
    if count is not None:
        timed("server: prompt_size (count_prompt)", count, call.request.messages)
    spans = Spans(args.device.startswith("cuda") or (args.device == "auto" and engine.uses_fast_path))
    instrument(spans)
    print("in-process engine.stream (server's engine, server-parsed request), ms:")
    print("  #  1st-event 1st-text eng.ttft  preproc   total  reused/prompt  tok/s")
    rows, holder = [], []
    for i in range(5):
        profile = i == 4
        if profile:
            holder = profile_worker(engine)
        spans.now = {}
        t0 = time.perf_counter()
        first_event = first_text = end = None
        for ev in engine.stream(call.request):
            now = time.perf_counter()
            first_event = first_event or now - t0
            if isinstance(ev, (ThinkingDelta, AnswerDelta)) and ev.text and first_text is None:
                first_text = now - t0
            if isinstance(ev, ErrorEvent):
                print(f"  error: {ev.message}")
            end = ev
        if not isinstance(end, Finished):
            continue
        tm, u = end.timings, end.usage
        tag = "P" if profile else str(i + 1)
        rate = f"{end.tokens_per_s:6.0f}" if end.tokens_per_s else "     -"
        print(f"  {tag} {ms(first_event)}  {ms(first_text)} {ms(tm.first_token_s)} {ms(tm.preprocess_s)} "
              f"{ms(tm.total_s)}  {u.reused_prompt_tokens:5d}/{u.prompt_tokens:<5d}  {rate}")
        rows.append((first_text, tm.first_token_s, dict(spans.now)))
    print("  engine pieces per request (ms; 1 = cold, P = profiled):")
    labels = list(dict.fromkeys(k for *_, s in rows for k in s))
    for label in labels:
        print(f"    {label:34s}" + "".join(ms(s.get(label)) for *_, s in rows))
    warm = rows[1:4] or rows
    SUMMARY.append(("in-proc: request -> first text (warm med)", median(r[0] or 0 for r in warm)))
    SUMMARY.append(("in-proc: engine first_token_s (warm med)", median(r[1] or 0 for r in warm)))
    for label in labels:
        SUMMARY.append((f"in-proc: {label.strip()} (warm med)", median(r[2].get(label, 0) for r in warm)))
    if profile and holder:
        print_profile(holder[0], args.top)
    engine.close()
    del engine
    gc.collect()
    if spans.cuda:
        __import__("torch").cuda.empty_cache()


def profile_worker(engine: Any) -> list[Any]:
    """Profile the engine's worker thread for the next turn, from its start to the first token put."""
    orig = type(engine)._work
    holder: list[Any] = []

    def work(self: Any, prompt: Any, request: Any, turn: Any, tokens: Any) -> None:
        prof = cProfile.Profile()
        put = tokens.put

        def put_first(item: Any, *a: Any, **k: Any) -> None:
            if isinstance(item, int):
                prof.disable()
            put(item, *a, **k)
        tokens.put = put_first
        holder.append(prof)
        vars(engine).pop("_work", None)  # only this one turn
        prof.enable()
        try:
            orig(self, prompt, request, turn, tokens)
        finally:
            prof.disable()
    engine._work = functools.partial(work, engine)
    return holder


def print_profile(prof: cProfile.Profile, top: int) -> None:
    import pstats

    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: -kv[1][3])[:top]
    print(f"  cProfile, worker thread to first token (top {top} cumulative): cum ms / own ms / calls")
    for (path, line, func), (_, calls, own, cum, _) in rows:
        short = path.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"    {cum * 1e3:8.1f} {own * 1e3:7.1f} {calls:6d}  {short[-48:]}:{line}({func[:28]})")


def http_phase(args: argparse.Namespace, body: dict[str, Any], env: dict[str, str]) -> None:
    import httpx

    from kimi_cli.discovery import find_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "kimi_cli", "serve", "--model", args.model, "--port", str(port),
           "--device", args.device]
    server = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t = time.perf_counter()
    try:
        while (info := find_server(args.model, env)) is None:
            if server.poll() is not None or time.perf_counter() - t > args.server_timeout:
                raise SystemExit(f"kimi serve did not come up: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.25)
        print(f"kimi serve up in {time.perf_counter() - t:.1f} s; httpx, ms: send->headers, ->1st data, "
              "->1st text, ->done (new client each)")
        firsts = []
        for i in range(4):
            marks = one_http(httpx, info, body)
            firsts.append(marks[2])
            print(f"  {i + 1} " + " ".join(ms(m) for m in marks))
        SUMMARY.append(("http: send -> first text (warm med of 2-4)", median(x or 0 for x in firsts[1:])))
        print("kimi ask --backend server subprocess, s: first byte (any), first stdout byte, exit, rc")
        ask = [sys.executable, "-m", "kimi_cli", "ask", args.image, PROMPT, "--backend", "server", "--format",
               "plain", "--thinking", "show", "--temperature", "0", "--max-new-tokens", "64", "--model", args.model]
        for i in range(2):
            marks = first_bytes(ask, env)
            print(f"  {i + 1} {marks[0]:.3f} {marks[1]:.3f} {marks[2]:.3f} rc={marks[3]}")
            SUMMARY.append((f"subprocess ask #{i + 1}: start -> first byte", marks[0]))
        proc = subprocess.run([sys.executable, "-X", "importtime", *ask[1:]], env=env, cwd=ROOT, check=False,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        rows = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")]
        timed_rows = sorted(((int(r[1]), r[2].rstrip()) for r in rows[1:] if r[1].strip().isdigit()), reverse=True)
        print(f"kimi ask -X importtime: {len(rows)} modules; top cumulative us:")
        for cum, name in timed_rows[:30]:
            print(f"  {cum:8d} {name}")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import kimi_cli.cli.app"], env=env, cwd=ROOT, check=False)
        SUMMARY.append(("subprocess: python -c 'import kimi_cli.cli.app'", time.perf_counter() - t))
    finally:
        server.terminate()
        server.wait(timeout=30)


def one_http(httpx: Any, info: Any, body: dict[str, Any]) -> list[float | None]:
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {info.token}"}
    marks: list[float | None] = [None, None, None, None]
    with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0), trust_env=False) as client:
        t0 = time.perf_counter()
        with client.stream("POST", f"{info.api_base}/chat/completions", json=body, headers=headers) as r:
            marks[0] = time.perf_counter() - t0
            for line in r.iter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                now = time.perf_counter() - t0
                marks[1] = marks[1] or now
                choices = json.loads(line[5:]).get("choices") or [{}]
                delta = choices[0].get("delta") or {}
                if marks[2] is None and (delta.get("content") or delta.get("reasoning_content")):
                    marks[2] = now
        marks[3] = time.perf_counter() - t0
    return marks


def first_bytes(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        sel.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    first = first_out = None
    while sel.get_map():
        for key, _ in sel.select():
            if not os.read(key.fileobj.fileno(), 65536):  # type: ignore[union-attr]
                sel.unregister(key.fileobj)
                continue
            now = time.perf_counter() - start
            first = first or now
            if key.fileobj is proc.stdout:
                first_out = first_out or now
    code = proc.wait()
    total = time.perf_counter() - start
    return first or total, first_out or total, total, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image", default=str(ROOT / "examples" / "chelsea.png"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--server-timeout", type=float, default=600.0)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    body = payload(client_request(args.model, args.image), args.model)
    local_phase(args, body)
    if not args.skip_http:
        with tempfile.TemporaryDirectory(prefix="kimi-probe-") as runtime:  # a private discovery dir
            env = {**os.environ, "XDG_RUNTIME_DIR": runtime, "PYTHONPATH": str(ROOT)}
            http_phase(args, body, env)
    print("summary: phase -> ms")
    for label, seconds in SUMMARY:
        print(f"  {label:52s} {ms(seconds)}")


if __name__ == "__main__":
    main()
