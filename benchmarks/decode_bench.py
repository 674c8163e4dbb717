"""Batch-1 decode benchmark: plain transformers `generate()` against the fast decoder, on one GPU.

    PYTHONPATH=. python benchmarks/decode_bench.py --synthetic --contexts 512,8192,32768

`--synthetic` builds a random-weight bf16 model of Kimi-VL's language-model shapes directly on the GPU
(decode speed does not depend on the values); `--model-dir` loads a `DeepseekV3ForCausalLM` checkpoint.
For each context length it measures: plain `generate()` decode tok/s (dynamic cache), the fast
decoder's prefill, graph capture, streamed decode tok/s (one host read per token, what users get) and
back-to-back replay tok/s, peak GPU memory, and greedy agreement with the plain path (free-running
divergence point; teacher-forced argmax agreement and max |logit difference|). Prints a Markdown table
and can write JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kimi_cli.bench.greedy import agreement as _agreement  # noqa: E402
from kimi_cli.bench.greedy import same_prefix  # noqa: E402
from kimi_cli.bench.timing import now as sync_time  # noqa: E402
from kimi_cli.engine.fast import FastDecoder, SamplingParams, bucket_length  # noqa: E402
from kimi_cli.engine.fast.graphs import GraphRunner  # noqa: E402
from kimi_cli.engine.fast.step import KernelConfig, TritonStep  # noqa: E402

GIB = 1024**3


@dataclass
class Row:
    """One context length's measurements."""

    context: int
    plain_tok_s: float | None = None
    fast_prefill_s: float = 0.0
    capture_s: float = 0.0
    stream_tok_s: float = 0.0
    replay_tok_s: float = 0.0
    peak_gib: float = 0.0
    cache_gib: float = 0.0
    greedy_same: int | None = None
    forced_agree: str = ""
    max_logit_diff: float | None = None
    notes: list[str] = field(default_factory=list)


def load_model(args: argparse.Namespace) -> torch.nn.Module:
    """The model under test, in bf16 on the GPU."""
    if args.synthetic:
        from kimi_cli.engine.fast.synthetic import build_model

        model = build_model("full", device="cuda", dtype=torch.bfloat16, seed=0)
    else:
        from transformers import DeepseekV3ForCausalLM

        model = DeepseekV3ForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16, device_map="cuda")
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def prompt(model: torch.nn.Module, context: int) -> torch.Tensor:
    """Random token ids [1, context] (seeded): prefill cost and decode speed do not depend on the text."""
    g = torch.Generator().manual_seed(context)
    return torch.randint(1000, model.config.vocab_size - 1000, (1, context), generator=g).cuda()


@torch.no_grad()
def plain_decode(model: torch.nn.Module, ids: torch.Tensor, n: int) -> tuple[float, torch.Tensor, list]:
    """Plain greedy `generate()`: decode tok/s from (n+1 tokens) - (1 token), tokens, and raw scores."""
    t0 = sync_time()
    model.generate(ids, max_new_tokens=1, do_sample=False)
    t1 = sync_time()
    out = model.generate(
        ids, max_new_tokens=n + 1, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    t2 = sync_time()
    rate = n / ((t2 - t1) - (t1 - t0))
    return rate, out.sequences[0, ids.shape[1] :], [s[0].float() for s in out.scores]


@torch.no_grad()
def static_decode(model: torch.nn.Module, ids: torch.Tensor, n: int, row: Row) -> None:
    """transformers' static cache (torch.compile + CUDA graphs): first-call seconds and warm decode tok/s."""
    kw = {"do_sample": False, "cache_implementation": "static"}
    t0 = sync_time()
    model.generate(ids, max_new_tokens=n + 1, **kw)
    t1 = sync_time()
    model.generate(ids, max_new_tokens=n + 1, **kw)
    t2 = sync_time()
    model.generate(ids, max_new_tokens=1, **kw)
    t3 = sync_time()
    row.notes.append(
        f"static cache: first call {t1 - t0:.1f} s, warm decode {n / ((t2 - t1) - (t3 - t2)):.1f} tok/s"
    )


def new_decoder(model: torch.nn.Module, max_len: int, cfg: KernelConfig | None = None) -> FastDecoder:
    """A fast decoder over the model's weights."""
    return FastDecoder(model.model, model.lm_head, max_len, "cuda", torch.bfloat16, kernel_config=cfg)


@torch.inference_mode()
def replay_rate(dec: FastDecoder, steps: int) -> float:
    """Tokens/s of back-to-back greedy graph replays (no host reads), continuing after the cache."""
    params = SamplingParams()
    dec.graphs.ensure(params)
    dec.pos.fill_(dec.length)
    for _ in range(3):
        dec.graphs.replay(params)
    dec.pos.fill_(dec.length)
    t0 = sync_time()
    for _ in range(steps):
        dec.graphs.replay(params)
    return steps / (sync_time() - t0)


def fast_decode(model: torch.nn.Module, ids: torch.Tensor, n: int, row: Row) -> tuple[FastDecoder, list[int]]:
    """Prefill, capture and stream `n` greedy tokens; fills the timing fields of `row`."""
    torch.cuda.reset_peak_memory_stats()
    dec = new_decoder(model, bucket_length(ids.shape[1] + 2 * n + 8))
    row.cache_gib = dec.cache.nbytes() / GIB
    with torch.inference_mode():
        embeds = model.model.embed_tokens(ids)
        t0 = sync_time()
        first = dec.prefill(embeds)
        row.fast_prefill_s = sync_time() - t0
    row.capture_s = dec.capture(SamplingParams())
    t0 = sync_time()
    tokens = list(dec.generate_tokens(first, SamplingParams(), n))
    row.stream_tok_s = (n - 1) / (sync_time() - t0)
    row.replay_tok_s = replay_rate(dec, n)
    row.peak_gib = torch.cuda.max_memory_allocated() / GIB
    return dec, tokens


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> str:
    """'argmax agreements/steps, max |a - b|' over two lists of logits."""
    same, diff = _agreement(a, b)
    return f"{same}/{len(a)} argmax, max diff {diff:.3f}"


@torch.inference_mode()
def compare(
    dec: FastDecoder, model: torch.nn.Module, ids: torch.Tensor, plain: torch.Tensor, scores, row: Row
):
    """Teacher-forced logits along the plain path's tokens: ours, plain incremental, and a full forward.

    The full forward (no cache, one pass over prompt + tokens) is a third bf16 computation of the same
    logits: plain-vs-full is the bf16 noise floor that ours-vs-plain should be judged against.
    """
    n = len(scores) - 1
    dec.reset()
    ours = [dec.prefill(model.model.embed_tokens(ids))]
    for i in range(n - 1):
        ours.append(dec.step(plain[i : i + 1]))
    seq = torch.cat([ids[0], plain[: n - 1]]).unsqueeze(0)
    full = model(input_ids=seq, logits_to_keep=n).logits[0].float()
    full = [full[i] for i in range(n)]
    plain_l = scores[:n]
    same, row.max_logit_diff = _agreement(ours, plain_l)
    row.forced_agree = f"{same}/{len(ours)}"
    top2 = torch.stack([x.topk(2)[0] for x in plain_l])
    row.notes += [
        f"ours vs plain: {agreement(ours, plain_l)}",
        f"ours vs full forward: {agreement(ours, full)}",
        f"plain vs full forward (bf16 noise floor): {agreement(plain_l, full)}",
        f"plain logits std {torch.stack(plain_l).std().item():.3f}, median top-2 gap "
        f"{(top2[:, 0] - top2[:, 1]).median().item():.3f}",
    ]


def sweep(model: torch.nn.Module, dec: FastDecoder, steps: int) -> list[tuple[str, float]]:
    """Replay tok/s for a few kernel launch shapes on the decoder's current cache."""
    configs = [
        KernelConfig(),
        KernelConfig(up_block_n=64),
        KernelConfig(down_block_n=64),
        KernelConfig(gemv_block_k=128),
        KernelConfig(up_block_k=128),
    ]
    out = []
    for cfg in configs:
        dec.impl = TritonStep(dec.weights, dec.cache, dec.rope, cfg)
        dec.graphs = GraphRunner(dec)
        try:
            out.append((repr(cfg), replay_rate(dec, steps)))
        except Exception as err:  # a launch shape can exceed the chip's resources
            out.append((repr(cfg), float("nan")))
            print(f"sweep: {cfg} failed: {err}", flush=True)
    dec.impl = TritonStep(dec.weights, dec.cache, dec.rope, KernelConfig())
    dec.graphs = GraphRunner(dec)
    return out


@torch.inference_mode()
def profile(dec: FastDecoder, steps: int = 3) -> str:
    """Top kernels of a few greedy graph replays."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    params = SamplingParams()
    dec.pos.fill_(dec.length)
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            dec.graphs.replay(params)
        torch.cuda.synchronize()
    try:
        return prof.key_averages().table(sort_by="self_device_time_total", row_limit=25)
    except (KeyError, AttributeError):
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    head = (
        "| context | plain tok/s | fast stream tok/s | fast replay tok/s | prefill s | capture s | peak GiB"
        " | greedy same (of 64) | forced argmax agree | max logit diff |\n|" + "---|" * 10
    )
    lines = [head]
    for r in rows:
        plain = f"{r.plain_tok_s:.1f}" if r.plain_tok_s else "-"
        diff = f"{r.max_logit_diff:.3f}" if r.max_logit_diff is not None else "-"
        same = "-" if r.greedy_same is None else str(r.greedy_same)
        lines.append(
            f"| {r.context} | {plain} | {r.stream_tok_s:.1f} | {r.replay_tok_s:.1f} | {r.fast_prefill_s:.2f}"
            f" | {r.capture_s:.2f} | {r.peak_gib:.1f} | {same} | {r.forced_agree or '-'} | {diff} |"
        )
    return "\n".join(lines)


def run_context(model: torch.nn.Module, context: int, args: argparse.Namespace) -> Row:
    """All measurements at one context length."""
    row = Row(context=context)
    ids = prompt(model, context)
    plain_tokens, scores = None, None
    if not args.skip_plain:
        row.plain_tok_s, plain_tokens, scores = plain_decode(model, ids, args.check_tokens)
    if args.static and context == int(args.contexts.split(",")[0]):
        try:
            static_decode(model, ids, args.check_tokens, row)
        except Exception as err:  # torch.compile failures are a result too
            row.notes.append(f"static cache failed: {type(err).__name__}: {str(err)[:200]}")
    dec, tokens = fast_decode(model, ids, args.new_tokens, row)
    if plain_tokens is not None:
        row.greedy_same = min(same_prefix(tokens, plain_tokens.tolist()), args.check_tokens)
        compare(dec, model, ids, plain_tokens, scores, row)
    if args.profile:
        print(profile(dec), flush=True)
    if args.sweep:
        row.notes += [f"{rate:.1f} tok/s {cfg}" for cfg, rate in sweep(model, dec, args.new_tokens)]
    print(f"[{context}] {asdict(row)}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every context, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--synthetic", action="store_true", help="random full-size bf16 weights built on the GPU"
    )
    src.add_argument("--model-dir", help="a DeepseekV3ForCausalLM checkpoint directory")
    p.add_argument("--contexts", default="512,8192,32768")
    p.add_argument("--new-tokens", type=int, default=256, help="tokens timed on the fast path")
    p.add_argument(
        "--check-tokens", type=int, default=64, help="tokens on the plain path (timed and compared)"
    )
    p.add_argument("--skip-plain", action="store_true")
    p.add_argument("--static", action="store_true", help="also time static cache + compile (first context)")
    p.add_argument("--sweep", action="store_true", help="try several kernel launch shapes")
    p.add_argument("--profile", action="store_true", help="print the top kernels of a few replays")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args)
    print(f"model ready in {time.perf_counter() - t0:.1f} s; {torch.cuda.memory_allocated() / GIB:.1f} GiB")
    rows = [run_context(model, int(c), args) for c in args.contexts.split(",")]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
