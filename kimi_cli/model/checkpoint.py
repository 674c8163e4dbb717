"""Find a Kimi-VL checkpoint (hub id or local directory) and load it onto transformers' native classes.

No remote code runs: the official `config.json` is mapped onto `Kimi_K25Config` (see
`kimi_cli.model.config`), and the official tensors are streamed straight into the native model's
parameters (`kimi_cli.model.fastload`), renamed and split as transformers' own `kimi_k25` conversion
mapping plus our projector renames would (`kimi_cli.model.names`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kimi_cli import DEFAULT_MODEL
from kimi_cli.errors import ModelLoadError
from kimi_cli.model import facts
from kimi_cli.model.config import (
    CheckpointConfig,
    estimate_parameters,
    native_config_kwargs,
    read_checkpoint_config,
    read_json,
)
from kimi_cli.model.phases import LoadPhases, PhaseClock
from kimi_cli.model.validate import (
    check_against_weights,
    check_weight_files,
    reading_once,
    refuse_pickled_only,
)

#: Official projector names -> native `Kimi_K25MultimodalProjection` names (facts 10.2), as a
#: `from_pretrained(key_mapping=...)`: the loader applies them itself (`model.names`); tests load the
#: tiny checkpoint through transformers with this to check the two agree.
PROJECTOR_KEY_MAPPING = {
    r"^multi_modal_projector\.pre_norm": "model.mm_projector.pre_norm",
    r"^multi_modal_projector\.linear_1": "model.mm_projector.in_proj",
    r"^multi_modal_projector\.linear_2": "model.mm_projector.out_proj",
}

#: What the loader fetches from the hub; the remote *.py files are never needed.
HUB_PATTERNS = ["*.json", "*.safetensors", "tiktoken.model", "*.jinja"]

REQUIRED_FILES = ("config.json", "tiktoken.model", "tokenizer_config.json", "preprocessor_config.json")


def looks_like_path(spec: str) -> bool:
    """Whether `--model` names a directory rather than a hub id (`org/name`)."""
    return spec.startswith((".", "/", "~")) or spec.count("/") != 1 or Path(spec).expanduser().exists()


def checkpoint_file(model: str | None, name: str) -> Path | None:
    """`name` from the checkpoint when it is on disk (a local directory or the hub cache), else None.

    No network access and no model load: planning and `--dry-run` see what the run will see.
    """
    path: Path | None = None
    if model and looks_like_path(model):
        path = Path(model).expanduser() / name
    elif model:
        path = hub_cache_file(model, name, os.environ)
    return path if path is not None and path.is_file() else None


def hub_cache_file(model: str, name: str, env: Mapping[str, str]) -> Path | None:
    """`name` of hub id `model` at its `main` revision in the hub cache, found by the cache's documented
    layout (`models--ORG--NAME/refs/main` -> `snapshots/HASH/NAME`) without importing huggingface_hub
    (0.1-0.2 s, with its HTTP stack): every warm `kimi ask` plans its images with this file. None when
    it is not there (not downloaded, or only at another revision)."""
    home = env.get("HF_HOME") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    cache = Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or Path(home) / "hub").expanduser()
    repo = cache / ("models--" + model.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not revision or "/" in revision or revision.startswith("."):
        return None
    found = repo / "snapshots" / revision / name
    return found if found.is_file() else None


def resolve_model(spec: str | None) -> Path:
    """Turn `--model` (hub id or local directory) into a local directory with the checkpoint files.

    Hub ids go through huggingface_hub: its cache, progress bars, `HF_HOME` and `HF_HUB_OFFLINE`.
    """
    spec = spec or DEFAULT_MODEL
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"{spec}: model directory not found",
                hint="pass --model with a hub id or a directory holding config.json and *.safetensors "
                "(`kimi synth DIR` writes a small test checkpoint)",
            )
        check_layout(path)
        return path
    return Path(_download(spec))


def _download(repo_id: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        path = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS)
    except GatedRepoError:
        raise ModelLoadError(f"{repo_id}: access to this model is gated",
                             hint="accept its terms on the hub and log in with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{repo_id}: no such model on the Hugging Face hub",
                             hint="check the id, or pass --model DIR for a local copy") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(
            f"{repo_id}: model unreachable (not in the local cache and the hub cannot be reached: "
            f"{_first_line(exc)})",
            hint=f"connect once and run `hf download {repo_id}`, or pass --model DIR",
        ) from None
    check_layout(Path(path))
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0]
    return line if len(line) <= 200 else line[:200].rsplit(" ", 1)[0] + " ..."


def check_layout(path: Path) -> None:
    """Fail with one line if the directory lacks a file of the official layout or its weights are bad.

    Pickled weights are refused (never unpickled) and every safetensors header is checked against
    its file before anything is mapped (`kimi_cli.model.validate`).
    """
    refuse_pickled_only(path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise ModelLoadError(f"{path / name}: missing",
                                 hint="the model directory must be in the official Kimi-VL layout")
    check_weight_files(path)


@dataclass
class LoadedModel:
    """A loaded model and everything needed to prompt it."""

    model: Any
    tokenizer: Any
    processor_config: Any
    checkpoint: CheckpointConfig
    path: Path
    device: Any
    dtype: Any
    stop_ids: tuple[int, ...]
    load_seconds: float
    #: Weight format of the language model's matrices (`bf16`: as published; see model/formats).
    weight_format: str = "bf16"
    #: The memory plan and why the format was picked (None off CUDA).
    placement: Any = None
    #: Lines for stderr about the load (e.g. that quantizing on the fly could be avoided).
    notes: tuple[str, ...] = ()
    #: Seconds per load phase and the bytes streamed (`kimi_cli.model.phases`).
    load_phases: LoadPhases = field(default_factory=LoadPhases)


def pick_device(requested: str) -> str:
    """`auto` -> `cuda` when a GPU is visible, else `mps` on Apple silicon, else `cpu`."""
    import torch

    if requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError(f"--device {requested}: no CUDA GPU is visible",
                                 hint="use --device cpu, or check the driver with nvidia-smi")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, checkpoint: CheckpointConfig, requested: str | None) -> Any:
    """bf16 on accelerators; on a CPU the checkpoint's own dtype when it is float32, else bf16."""
    import torch

    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if requested and requested != "auto":
        return table[requested]
    if device == "cpu" and checkpoint.text.get("torch_dtype") == "float32":
        return torch.float32
    return torch.bfloat16


def pick_attention(requested: str) -> str:
    """SDPA by default; flash-attention 2 when asked for and installed. Never eager (vision OOM)."""
    if requested in ("auto", "sdpa"):
        if requested == "auto" and _flash_available():
            return "flash_attention_2"
        return "sdpa"
    if requested in ("flash", "flash_attention_2"):
        if not _flash_available():
            raise ModelLoadError("--attention flash: flash-attn is not installed",
                                 hint="pip install 'kimi-vl-cli[flash]', or use --attention sdpa")
        return "flash_attention_2"
    raise ModelLoadError(f"--attention {requested}: unknown", hint="use auto, sdpa or flash")


def _flash_available() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def stop_token_ids(path: Path, tokenizer: Any) -> tuple[int, ...]:
    """`<|im_end|>`, `[EOS]`, then any eos ids from `generation_config.json` when the file exists."""
    gen = path / "generation_config.json"
    eos = read_json(gen).get("eos_token_id") if gen.is_file() else None
    return facts.stop_token_ids(tokenizer.im_end_id, tokenizer.eos_id, eos)


def load_model(spec: str | None, *, device: str = "auto", dtype: str | None = None,
               attention: str = "auto", quantize: str = "auto", max_gpu_memory: int | None = None,
               need: Any = None, before_weights: Callable[..., None] | None = None) -> LoadedModel:
    """Resolve, map and load a Kimi-VL checkpoint; every failure is a one-line `ModelLoadError`.

    `quantize` is `auto` or a format name (model/formats); `need` (a `memory.Need`) is what the request
    may need besides the weights, planned against the GPU's free memory or `max_gpu_memory` bytes.
    `before_weights(checkpoint, device, dtype, format)` runs once those are known, just before the
    weights are read (the app starts compiling GPU kernels there, to overlap the load).
    Each phase's seconds land in `LoadedModel.load_phases`. Once the directory is known, a cold
    checkpoint's files are read into the page cache beside the imports (`model.prefetch`).
    """
    from kimi_cli.model import prefetch

    clock = PhaseClock()
    with reading_once():  # each header parsed and checked once, not at every step that asks
        path = resolve_model(spec)
        clock.lap("resolve")
        with prefetch.warming(path) as warm:  # the weight files into the page cache while torch imports
            loaded = _load_resolved(spec, path, clock, device, dtype, attention, quantize, max_gpu_memory,
                                    need, before_weights)
    if warm is not None:
        loaded = replace(loaded, load_phases=replace(loaded.load_phases, prefetched=warm.bytes_read))
    return loaded


def _load_resolved(spec: str | None, path: Path, clock: PhaseClock, device: str, dtype: str | None,
                   attention: str, quantize: str, max_gpu_memory: int | None, need: Any,
                   before_weights: Callable[..., None] | None) -> LoadedModel:
    """`load_model` once the checkpoint's directory is known."""
    from kimi_cli.model.image_processor import ProcessorConfig
    from kimi_cli.model.memory import Need, stored_elements
    from kimi_cli.model.placement import place
    from kimi_cli.model.qload import stored_format  # imports torch
    from kimi_cli.model.tokenizer import load_tokenizer

    clock.lap("import")
    checkpoint = read_checkpoint_config(path)
    proc_cfg = ProcessorConfig.from_file(path / "preprocessor_config.json")
    stored = stored_format(checkpoint.quantization)
    check_against_weights(path, stored_elements(checkpoint, stored) if stored else estimate_parameters(checkpoint))
    clock.lap("config")
    tokenizer = load_tokenizer(path)
    clock.lap("tokenizer")
    dev = pick_device(device)
    torch_dtype = pick_dtype(dev, checkpoint, dtype)
    placement = place(checkpoint, quantize, dev, need or Need(context_tokens=8192), max_gpu_memory, stored)
    attn = pick_attention(attention)
    if before_weights is not None:
        before_weights(checkpoint, dev, torch_dtype, placement.format)
    clock.lap("device")
    if placement.format == "bf16":
        model = _load_weights(path, checkpoint, tokenizer, dev, torch_dtype, attn, clock)
    else:
        model = _load_quantized(path, checkpoint, tokenizer, dev, torch_dtype, attn, placement.format, stored, clock)
    seconds = clock.total()
    return LoadedModel(
        model=model, tokenizer=tokenizer, processor_config=proc_cfg, checkpoint=checkpoint, path=path,
        device=model.device, dtype=torch_dtype, stop_ids=stop_token_ids(path, tokenizer),
        load_seconds=seconds, weight_format=placement.format, placement=placement,
        notes=_load_notes(spec, placement.format, stored, seconds), load_phases=clock.frozen(),
    )


def _load_notes(spec: str | None, fmt: str, stored: str | None, seconds: float) -> tuple[str, ...]:
    if fmt == "bf16" or stored is not None:
        return ()
    return (f"quantized to {fmt} while loading ({seconds:.1f} s); `kimi quantize {spec or DEFAULT_MODEL} "
            f"--format {fmt}` writes a checkpoint that loads without converting (half the bytes to read, "
            "a quarter for int4)",)


def native_config(checkpoint: CheckpointConfig, tokenizer: Any, attention: str = "sdpa") -> Any:
    """A `Kimi_K25Config` equivalent to the checkpoint's official config."""
    from transformers import Kimi_K25Config

    media = {"media_start": tokenizer.media_start_id, "media_end": tokenizer.media_end_id}
    config = Kimi_K25Config(**native_config_kwargs(checkpoint, media))
    config._attn_implementation = attention
    config.text_config._attn_implementation = attention
    config.vision_config._attn_implementation = attention
    return config


def _load_quantized(path: Path, checkpoint: CheckpointConfig, tokenizer: Any, device: str, dtype: Any,
                    attention: str, fmt: str, stored: str | None, clock: PhaseClock) -> Any:
    from kimi_cli.model.formats import get_format
    from kimi_cli.model.qload import load_quantized_model

    with _load_errors(path, f" as {fmt}", "use a smaller format (--quantize int4) or free the GPU"):
        return load_quantized_model(path, checkpoint, tokenizer, device, dtype, attention, get_format(fmt), stored,
                                    clock)


def _load_weights(path: Path, checkpoint: CheckpointConfig, tokenizer: Any, device: str, dtype: Any,
                  attention: str, clock: PhaseClock) -> Any:
    from kimi_cli.model.fastload import load_streamed

    config = native_config(checkpoint, tokenizer, attention)
    with _load_errors(path, "", "free the GPU or use a GPU with more memory"):
        return load_streamed(path, config, device, dtype, clock)


@contextmanager
def _load_errors(path: Path, how: str, oom_hint: str) -> Iterator[None]:
    """Running out of GPU memory, or a read failing, while loading: one line, never a traceback."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise ModelLoadError(f"out of GPU memory while loading the model{how}", hint=oom_hint) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: cannot load weights{how} ({_first_line(exc)})",
                             hint="the safetensors files may be incomplete; re-download the model") from None
