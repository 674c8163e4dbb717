"""Options shared by several commands, declared once as `Annotated` aliases.

Defaults are `None` so that `kimi_cli.config.merge_settings` can tell a flag that was given from one
that was not (config file and `KIMI_*` variables fill the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Hub id or local directory of a Kimi-VL checkpoint [default: moonshotai/Kimi-VL-A3B-Thinking-2506].",
    show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="auto, cuda, cuda:N, mps or cpu [default: auto].", show_default=False)]
DtypeOpt = Annotated[str | None, typer.Option(
    "--dtype", help="auto, bfloat16, float16 or float32 [default: auto: bf16 on GPU].", show_default=False)]
AttentionOpt = Annotated[str | None, typer.Option(
    "--attention", help="auto, sdpa or flash (flash-attn when installed) [default: auto].", show_default=False)]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="auto, fast (GPU) or plain (transformers forward) [default: auto].", show_default=False)]
MaxNewTokensOpt = Annotated[int | None, typer.Option(
    "--max-new-tokens", "-n", min=1, help="Most tokens to generate, thinking included [default: 32768].",
    show_default=False)]
TemperatureOpt = Annotated[float | None, typer.Option(
    "--temperature", "-t", min=0.0, help="Sampling temperature; 0 is greedy [default: 0.8].", show_default=False)]
TopPOpt = Annotated[float | None, typer.Option(
    "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass [default: 1.0].", show_default=False)]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed for reproducible sampling.")]
SystemOpt = Annotated[str | None, typer.Option(
    "--system", help="System prompt [default: the model's own, 'You are a helpful assistant'].",
    show_default=False)]
FormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="auto (rich on a terminal, plain in a pipe), rich, plain, json or jsonl.")]
ThinkingOpt = Annotated[str | None, typer.Option(
    "--thinking", help="collapse (one line once the answer starts), show or hide [default: collapse].",
    show_default=False)]
PagesOpt = Annotated[str | None, typer.Option(
    "--pages", help="PDF pages to use, e.g. 1-3,7 (applies to every PDF; or write report.pdf:1-3).")]
MaxPagesOpt = Annotated[int | None, typer.Option(
    "--max-pages", min=1, help="Most PDF pages read when no selection is given [default: 20].", show_default=False)]
FpsOpt = Annotated[float | None, typer.Option("--fps", min=0.0, help="Video frames sampled per second.")]
MaxFramesOpt = Annotated[int | None, typer.Option("--max-frames", min=1, help="Most frames per video.")]
RangeOpt = Annotated[str | None, typer.Option(
    "--range", help="Video time range, e.g. 00:10-01:30 or 5-20 (seconds).")]
MaxImageTokensOpt = Annotated[int | None, typer.Option(
    "--max-image-tokens", min=64, help="Visual-token budget shared by all inputs of a prompt [default: 16384].",
    show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the input plan without loading the model.")]
OutDirArg = Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")]


def setting_flags(**flags: object) -> dict[str, object]:
    """The flags that go through the settings chain (config file, `KIMI_*`), by setting name.

    Commands pass their option values as keywords; `None` means "not given on the command line".
    """
    names = ("model", "device", "dtype", "attention", "engine", "max_new_tokens", "temperature", "top_p",
             "thinking", "max_image_tokens")
    unknown = set(flags) - set(names)
    if unknown:
        raise TypeError(f"not settings: {sorted(unknown)}")
    return {name: flags.get(name) for name in names}

