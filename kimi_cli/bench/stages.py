"""The stages of `run_bench`, each filling its part of the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kimi_cli.bench.report import BenchReport


def prepare_image(folder: Path, opts: Any, report: BenchReport) -> Path:
    """Write the test image; its path is recorded in the report."""
    from kimi_cli.bench.ttft import write_bench_image

    path = write_bench_image(folder, opts.image_size)
    report.image = f"{opts.image_size}x{opts.image_size} synthetic PNG ({path.stat().st_size / 1e6:.1f} MB)"
    return path


def fast_engine_available(opts: Any) -> bool:
    """Whether `LocalEngine(mode="fast")` can run here (a CUDA GPU with Triton)."""
    from kimi_cli.engine.fast import available

    return "fast" in opts.engines and opts.device != "cpu" and available("cuda")


def fresh_engine(opts: Any) -> str:
    """The engine a fresh `kimi ask` is run with: ours when it can run here, else plain."""
    return "fast" if fast_engine_available(opts) else "plain"


def fresh(opts: Any, report: BenchReport, image: Path) -> None:
    """One fresh `kimi ask` process."""
    from kimi_cli.bench.fresh import fresh_ttft

    run = fresh_ttft(report.model, image, opts.question, fresh_engine(opts), tokens=16, device=opts.device)
    report.fresh.append(run)


def load(opts: Any, report: BenchReport) -> Any:
    """Load the model once for all in-process stages; records load seconds and resident weights."""
    import torch

    from kimi_cli.app.engines import quiet_libraries
    from kimi_cli.bench.timing import GIB
    from kimi_cli.model.checkpoint import load_model

    quiet_libraries()
    loaded = load_model(report.model, device=opts.device)
    report.load_s = loaded.load_seconds
    if torch.cuda.is_available() and str(loaded.model.device).startswith("cuda"):
        report.weights_gib = torch.cuda.memory_allocated() / GIB
    return loaded


def user_seen(loaded: Any, opts: Any, report: BenchReport, folder: Path, image: Path, kind: str) -> None:
    """Tokens/s as `kimi ask` delivers them for one kind of input, next to the decode figure there."""
    from kimi_cli.bench.seen import SeenSpec, measure

    spec = SeenSpec(tokens=opts.seen_tokens, image=image, decode_tokens=opts.tokens)
    report.seen.append(measure(loaded, report.model, kind, spec, folder, fresh_engine(opts)))


def ttft(loaded: Any, opts: Any, report: BenchReport, image: Path) -> None:
    """Warm TTFT pieces for plain and (if benchmarked) our engine."""
    from kimi_cli.bench.timing import free_cuda
    from kimi_cli.bench.ttft import time_pieces

    if "plain" in opts.engines or "static" in opts.engines:
        report.ttft.append(time_pieces(loaded, image, opts.question, "plain", opts.reps, opts.tokens))
    if "fast" in opts.engines:
        report.ttft.append(time_pieces(loaded, image, opts.question, "fast", opts.reps, opts.tokens))
        free_cuda()


def engine_turns(loaded: Any, opts: Any, report: BenchReport, image: Path) -> None:
    """Whole greedy turns through `LocalEngine` in each benchmarked mode."""
    from PIL import Image

    from kimi_cli.bench.ttft import engine_ttft

    with Image.open(image) as img:
        picture = img.convert("RGB")
    tokens = min(opts.tokens, 64)
    modes = [m for m in ("plain", "fast") if m in opts.engines and (m == "plain" or fast_engine_available(opts))]
    for mode in modes:
        report.engine_runs.append(engine_ttft(loaded, mode, picture, opts.question, tokens, opts.reps))


def _greedy(loaded: Any, name: str, embeds: Any, plain_tokens: list[int], plain_logits: list[Any],
            ours: list[int], dec: Any) -> Any:
    from kimi_cli.bench.greedy import check, forced_logits, full_forward_logits

    model = loaded.model
    n = len(plain_tokens)
    forced = forced_logits(dec, embeds, plain_tokens)
    floor = full_forward_logits(model.model.language_model, model.lm_head, embeds, plain_tokens)
    return check(name, ours[:n], plain_tokens, plain_logits[:n], forced, floor)


def image_greedy(loaded: Any, opts: Any, report: BenchReport, image: Path) -> None:
    """Greedy tokens of our engine vs the plain path on the image prompt."""
    import torch

    from kimi_cli.bench.decode import new_fast_decoder
    from kimi_cli.bench.greedy import plain_greedy
    from kimi_cli.bench.timing import free_cuda
    from kimi_cli.bench.ttft import prompt_embeds
    from kimi_cli.engine.fast import SamplingParams

    if not {"plain", "fast"} <= set(opts.engines):
        return
    n = opts.check_tokens
    model = loaded.model
    with torch.inference_mode():
        embeds = prompt_embeds(loaded, image, opts.question)
        plain, logits = plain_greedy(model.model.language_model, model.lm_head, embeds, n)
        dec = new_fast_decoder(loaded, embeds.shape[1] + 2 * n + 8)
        ours = list(dec.generate_tokens(dec.prefill(embeds), SamplingParams(), n))
        size = opts.image_size
        report.greedy.append(_greedy(loaded, f"{size}x{size} image + question", embeds, plain, logits, ours, dec))
    del dec
    free_cuda()


def decode_context(loaded: Any, opts: Any, report: BenchReport, ctx: int) -> None:
    """Decode tok/s of each engine at `ctx` tokens of context, and the greedy check there."""
    import torch

    from kimi_cli.bench.decode import fast_decode, plain_decode, random_context, static_decode
    from kimi_cli.bench.timing import free_cuda

    model = loaded.model
    ids = random_context(model.config.text_config.vocab_size, ctx, model.device)
    plain = None
    if "plain" in opts.engines:
        run, tokens, logits = plain_decode(model, ids, opts.tokens)
        report.decode.append(run)
        plain = (tokens[: opts.check_tokens], logits[: opts.check_tokens])
    if "static" in opts.engines:
        report.decode.append(static_decode(model, ids, opts.tokens))
        free_cuda()
    if "fast" in opts.engines:
        with torch.inference_mode():
            embeds = model.model.language_model.embed_tokens(ids)  # text only: no image step to share
            run, ours, dec = fast_decode(loaded, embeds, opts.tokens)
            report.decode.append(run)
            if plain is not None:
                report.greedy.append(_greedy(loaded, f"{ctx} random tokens", embeds, *plain, ours, dec))
        del dec
    free_cuda()


def explore(loaded: Any, opts: Any, report: BenchReport, image: Path) -> None:
    """Backend and preprocessing alternatives, and profiler tables (CUDA only)."""
    import torch

    from kimi_cli.bench.explore import explore as run_explore

    if not torch.cuda.is_available():
        report.explore = {"skipped": "needs CUDA"}
        return
    start = time.perf_counter()
    report.explore = run_explore(loaded, image, opts.question, opts.profile_dir)
    report.explore["seconds"] = round(time.perf_counter() - start, 1)
