"""`kimi bench --quantize bf16,int8,fp8,int4`: every weight format side by side in one run.

Per format, loaded fresh in the same process: resident weights, load seconds and the load's peak, the
time to first token through `LocalEngine` for an image + question (the median of a few warm turns, and
their peak), decode tok/s of the fast decoder at each context (and the peak of the longest context's
prefill), and fidelity against bf16: teacher-forced logits of the language model on the same random
tokens, as the mean KL(bf16 || format) and top-1 agreement. The bf16 noise floor is bf16's uncached forward against bf16 through the
fast decoder step by step (other kernels, other reduction orders: what bf16 rounding alone moves).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kimi_cli.bench.timing import GIB, free_cuda, now, peak_gib, reset_peak

FORCED_TOKENS = 256
#: timed image turns after the warm-up; the TTFT reported is their median
TTFT_TURNS = 3


@dataclass
class FormatRun:
    """One format's figures (GiB, seconds, ms, tok/s by context)."""

    format: str
    weights_gib: float | None = None
    load_s: float | None = None
    load_peak_gib: float | None = None
    ttft_ms: float | None = None  # the median of `ttft_turns_ms`
    ttft_turns_ms: list[float] = field(default_factory=list)
    image_peak_gib: float | None = None
    decode: dict[int, float | None] = field(default_factory=dict)
    prefill_peak_gib: dict[int, float | None] = field(default_factory=dict)
    kl: float | None = None
    top1: float | None = None
    against: str = "bf16"  # what kl and top1 compare with: "bf16", or "itself" (the format's own noise floor)
    errors: list[str] = field(default_factory=list)


def forced_logits(loaded: Any, ids: Any, fast: bool = False) -> Any:
    """float32 log-probabilities [T-1, vocab] of the language model along `ids` [1, T], teacher-forced:
    one uncached forward (`fast=False`), or step by step through the fast decoder."""
    import torch

    from kimi_cli.bench.decode import new_fast_decoder
    from kimi_cli.bench.greedy import forced_logits as decoder_logits
    from kimi_cli.bench.greedy import full_forward_logits

    lm, head = loaded.model.model.language_model, loaded.model.lm_head
    tokens = ids[0, 1:].tolist()
    with torch.inference_mode():
        embeds = lm.embed_tokens(ids[:, :1])
        if fast:
            rows = decoder_logits(new_fast_decoder(loaded, ids.shape[1] + 8), embeds, tokens)
        else:
            rows = full_forward_logits(lm, head, embeds, tokens)
        return torch.log_softmax(torch.stack([r.float().view(-1) for r in rows]), dim=-1)


def fidelity(ref: Any, other: Any) -> tuple[float, float]:
    """(mean KL(ref || other) in nats, top-1 agreement) of two [T, vocab] log-probability tensors."""
    import torch

    other = other.to(ref.device)
    kl = torch.sum(ref.exp() * (ref - other), dim=-1).mean().item()
    top1 = (ref.argmax(-1) == other.argmax(-1)).float().mean().item()
    return kl, top1


def _ttft(loaded: Any, image: Path, question: str) -> tuple[list[float], float | None]:
    """The first-token times (ms) of `TTFT_TURNS` image turns after a warm-up, and their peak GiB."""
    from PIL import Image

    from kimi_cli.conversation import GenerationSettings, Message, Request
    from kimi_cli.engine.local import LocalEngine
    from kimi_cli.events.types import Finished
    from kimi_cli.media.types import ImagePart, TextPart

    engine = LocalEngine(loaded)
    msg = Message("user", (ImagePart(Image.open(image).convert("RGB"), source=str(image)), TextPart(question)))
    request = Request(messages=(msg,), settings=GenerationSettings(temperature=0.0, max_new_tokens=4))
    firsts: list[float] = []
    for i in range(1 + TTFT_TURNS):  # a warm-up, then the timed turns (one turn moved by tens of ms)
        if i == 1:
            reset_peak()  # the peak of the timed turns, as before of the one timed turn
        for event in engine.stream(request):
            if isinstance(event, Finished) and i and event.timings.first_token_s is not None:
                firsts.append(event.timings.first_token_s * 1000)
    return firsts, peak_gib()


def _decode(loaded: Any, run: FormatRun, contexts: tuple[int, ...], tokens: int) -> None:
    from kimi_cli.bench.decode import fast_decode, random_context

    lm = loaded.model.model.language_model
    for ctx in contexts:
        try:
            ids = random_context(lm.config.vocab_size, ctx, loaded.model.device)
            result, _, dec = fast_decode(loaded, lm.embed_tokens(ids), tokens)
            run.decode[ctx], run.prefill_peak_gib[ctx] = result.tokens_per_s, result.peak_gib
            del dec
        except Exception as exc:  # noqa: BLE001 - one context must not lose the others
            run.errors.append(f"decode {ctx}: {type(exc).__name__}: {str(exc)[:200]}")
        free_cuda()


def measure_format(model: str, fmt: str, device: str, opts: Any, image: Path | None, ref: Any,
                   cap: int | None = None) -> tuple[FormatRun, Any]:
    """Load `model` as `fmt` and measure it (quantized formats under `cap` bytes, when given)."""
    import torch

    from kimi_cli.bench.decode import random_context
    from kimi_cli.model.checkpoint import load_model

    run = FormatRun(fmt)
    free_cuda()
    reset_peak()
    t0 = now()
    loaded = load_model(model, device=device, quantize=fmt, max_gpu_memory=None if fmt == "bf16" else cap)
    run.load_s = now() - t0
    cuda = torch.cuda.is_available() and str(loaded.model.device).startswith("cuda")
    if cuda:
        run.weights_gib, run.load_peak_gib = torch.cuda.memory_allocated() / GIB, peak_gib()
    if image is not None:
        run.ttft_turns_ms, run.image_peak_gib = _ttft(loaded, image, opts.question)
        run.ttft_ms = statistics.median(run.ttft_turns_ms) if run.ttft_turns_ms else None
    _decode(loaded, run, opts.contexts, opts.tokens)
    ids = random_context(loaded.model.config.text_config.vocab_size, FORCED_TOKENS, loaded.model.device)
    logits = forced_logits(loaded, ids)
    if ref is not None:
        run.kl, run.top1 = fidelity(ref, logits)
    else:
        # no bf16 reference in this run: the format's own noise floor (bf16's, when the format is bf16)
        run.kl, run.top1 = fidelity(logits, forced_logits(loaded, ids, fast=True))
        run.against = "itself"
    del loaded
    free_cuda()
    return run, logits.cpu()


def run_formats(model: str, formats: tuple[str, ...], device: str, opts: Any, image: Path | None,
                json_path: Path | None, cap: int | None = None) -> list[FormatRun]:
    """Every format in turn, each in a fresh process (bf16 first when listed: the fidelity reference).

    A fresh process per format gives each its own allocator, memory cap and peak, and returns all of
    its memory before the next loads (one process held the previous model and ran out under a cap).
    """
    import tempfile

    order = sorted(formats, key=lambda f: f != "bf16")
    runs: list[FormatRun] = []
    with tempfile.TemporaryDirectory(prefix="kimi-formats-") as tmp:
        ref = None
        for fmt in order:
            run = _in_subprocess(Path(tmp), model, fmt, device, opts, image, ref, cap)
            if fmt == "bf16" and not run.errors:
                ref = Path(tmp) / "bf16.pt"
            runs.append(run)
            if json_path is not None:
                json_path.write_text(json.dumps([asdict(r) for r in runs], indent=2, default=str) + "\n")
    return runs


def _in_subprocess(tmp: Path, model: str, fmt: str, device: str, opts: Any, image: Path | None,
                   ref: Path | None, cap: int | None) -> FormatRun:
    import subprocess
    import sys

    job = {"model": model, "format": fmt, "device": device, "contexts": list(opts.contexts), "tokens": opts.tokens,
           "question": opts.question, "image": None if image is None else str(image),
           "ref": None if ref is None else str(ref), "cap": cap, "out": str(tmp / f"{fmt}.json"),
           "logits": str(tmp / f"{fmt}.pt")}
    spec = tmp / f"{fmt}-job.json"
    spec.write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "kimi_cli.bench.formats", str(spec)], stdin=subprocess.DEVNULL)
    out = Path(job["out"])
    if proc.returncode != 0 or not out.is_file():
        return FormatRun(fmt, errors=[f"measuring process exited with {proc.returncode}"])
    data = json.loads(out.read_text())
    data["decode"] = {int(k): v for k, v in data["decode"].items()}
    data["prefill_peak_gib"] = {int(k): v for k, v in data["prefill_peak_gib"].items()}
    return FormatRun(**data)


def _worker(spec_path: str) -> None:
    """The measuring process: one format, its run as JSON and its forced log-probabilities."""
    from types import SimpleNamespace

    import torch

    from kimi_cli.app.engines import quiet_libraries

    quiet_libraries()
    job = json.loads(Path(spec_path).read_text())
    opts = SimpleNamespace(contexts=tuple(job["contexts"]), tokens=job["tokens"], question=job["question"])
    ref = torch.load(job["ref"]) if job["ref"] else None
    image = Path(job["image"]) if job["image"] else None
    try:
        run, logits = measure_format(job["model"], job["format"], job["device"], opts, image, ref, job["cap"])
        torch.save(logits, job["logits"])
    except Exception as exc:  # noqa: BLE001 - reported in the table
        run = FormatRun(job["format"], errors=[f"{type(exc).__name__}: {str(exc)[:300]}"])
    Path(job["out"]).write_text(json.dumps(asdict(run), default=str))


def _cell(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def formats_markdown(runs: list[FormatRun], contexts: tuple[int, ...]) -> str:
    """One table, a column per format (the fidelity row of bf16 is its noise floor)."""
    head = "| metric | " + " | ".join(r.format for r in runs) + " |\n|---|" + "---|" * len(runs) + "\n"
    rows = [("weights GiB", [_cell(r.weights_gib, 2) for r in runs]),
            ("peak GiB during load", [_cell(r.load_peak_gib, 2) for r in runs]),
            ("load s", [_cell(r.load_s) for r in runs]),
            (f"TTFT ms (image + question, warm, median of {TTFT_TURNS})", [_cell(r.ttft_ms) for r in runs]),
            ("peak GiB, image turn", [_cell(r.image_peak_gib, 2) for r in runs])]
    for ctx in contexts:
        rows.append((f"decode tok/s at {ctx}", [_cell(r.decode.get(ctx)) for r in runs]))
    if contexts:
        top = max(contexts)
        rows.append((f"peak GiB, {top}-token prefill + decode", [_cell(r.prefill_peak_gib.get(top), 2) for r in runs]))
    def vs(r: FormatRun, v: float | None, digits: int) -> str:  # a quantized format without bf16 in the run
        own = r.against == "itself" and r.format != "bf16" and v is not None
        return _cell(v, digits) + (" (vs itself: its noise floor)" if own else "")

    rows += [("KL vs bf16, nats/token (bf16: noise floor)", [vs(r, r.kl, 5) for r in runs]),
             ("top-1 agreement vs bf16", [vs(r, r.top1, 3) for r in runs])]
    body = "".join(f"| {name} | " + " | ".join(cells) + " |\n" for name, cells in rows)
    errors = [f"- {r.format}: {e}\n" for r in runs for e in r.errors]
    return head + body + ("\nErrors:\n" + "".join(errors) if errors else "")


if __name__ == "__main__":
    import sys

    _worker(sys.argv[1])
