"""Check an untrusted checkpoint's config and weight files before anything is built or allocated.

A model directory is parsed as if hostile: `config.json` field types and ranges are checked before
transformers sees them (`"hidden_size": "big"` was an 87-line traceback), sizes that would
allocate absurd memory are refused, pickled weights are never unpickled (`pytorch_model.bin`
alone is refused with a hint to convert), and every safetensors header is read and checked
against its file's size before a tensor is mapped. Each failure is one `ModelLoadError` line.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from kimi_cli.errors import ModelLoadError
from kimi_cli.textsafe import json_loads

_HINT = "the checkpoint's config.json is not a valid Kimi-VL config; re-download the model"

#: Positive integer fields and their upper bounds: well above the real model (facts 1.2, 1.3),
#: low enough that no product of them allocates beyond what any machine has.
TEXT_INT_FIELDS: dict[str, int] = {
    "vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
    "moe_intermediate_size": 1 << 16, "num_hidden_layers": 1024, "num_attention_heads": 1024,
    "num_key_value_heads": 1024, "kv_lora_rank": 1 << 14, "qk_rope_head_dim": 4096,
    "qk_nope_head_dim": 4096, "v_head_dim": 4096, "n_routed_experts": 4096, "num_experts_per_tok": 4096,
    "max_position_embeddings": 1 << 24,
}
#: Non-negative integer fields (zero allowed) with upper bounds.
TEXT_COUNT_FIELDS: dict[str, int] = {"n_shared_experts": 64, "first_k_dense_replace": 1024, "n_group": 4096,
                                     "topk_group": 4096}
VISION_INT_FIELDS: dict[str, int] = {
    "patch_size": 1024, "init_pos_emb_height": 4096, "init_pos_emb_width": 4096, "num_attention_heads": 1024,
    "num_hidden_layers": 1024, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
}
#: Float fields that must be finite and positive when present.
TEXT_FLOAT_FIELDS = ("rms_norm_eps", "rope_theta", "routed_scaling_factor")
#: No Kimi-VL variant comes near this; a config above it would try to allocate terabytes.
MAX_PARAMETERS = 2 * 10**12

#: Pickle-based weight files: loading them runs code, so they are never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: A safetensors header is JSON of a few hundred KB for the real model; anything near this is hostile.
MAX_HEADER_BYTES = 100 * 2**20
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


_T = TypeVar("_T")
#: What `reading_once` has parsed so far in this thread (a context variable: a load in another thread
#: has its own), by file identity; None outside such a block.
_memo: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("kimi_header_memo", default=None)


@contextmanager
def reading_once() -> Iterator[None]:
    """Inside the block each weight file's header, and a directory's index, is read, parsed and checked
    once, however many steps of a load ask for it (a `kimi quantize`d checkpoint's headers hold about
    15,000 entries, and a load asked for each three times). A file whose size, inode or modification
    time changes is read again. Blocks nest; the outermost one ends the memo."""
    token = _memo.set({}) if _memo.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _memo.reset(token)


def memoized(kind: str, path: Path, compute: Callable[[], _T]) -> _T:
    """`compute()` for `path`, once per file identity inside `reading_once` (every call outside it)."""
    memo = _memo.get()
    if memo is None:
        return compute()
    try:
        st = path.stat()
    except OSError:
        return compute()  # its own error, from the read
    key = (kind, str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _bad(path: Path, field: str, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: {field} {problem}", hint=_HINT)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(path: Path, field: str, value: Any, low: int, high: int) -> None:
    """`value` must be an integer in [low, high]."""
    if not _is_int(value):
        raise _bad(path, field, f"must be an integer, not {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise _bad(path, field, f"is {value}, outside {low}..{high}")


def check_config_values(path: Path, text: dict[str, Any], vision: dict[str, Any]) -> None:
    """Types and ranges of every field the loader reads; required sizes must be present."""
    for key, high in TEXT_INT_FIELDS.items():
        if key not in text:
            raise _bad(path, f"text_config.{key}", "is missing")
        check_int(path, f"text_config.{key}", text[key], 1, high)
    for key, high in TEXT_COUNT_FIELDS.items():
        if text.get(key) is not None:
            check_int(path, f"text_config.{key}", text[key], 0, high)
    if text.get("q_lora_rank") is not None:
        check_int(path, "text_config.q_lora_rank", text["q_lora_rank"], 1, 1 << 14)
    for key in TEXT_FLOAT_FIELDS:
        value = text.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value > 0):
            raise _bad(path, f"text_config.{key}", f"must be a positive number, not {json.dumps(value)[:40]}")
    if (text.get("first_k_dense_replace") or 0) > text["num_hidden_layers"]:
        raise _bad(path, "text_config.first_k_dense_replace", "is larger than num_hidden_layers")
    if text["num_experts_per_tok"] > text["n_routed_experts"]:
        raise _bad(path, "text_config.num_experts_per_tok", "is larger than n_routed_experts")
    for key, high in VISION_INT_FIELDS.items():
        if vision.get(key) is not None:
            check_int(path, f"vision_config.{key}", vision[key], 1, high)
    merge = vision.get("merge_kernel_size", [2, 2])
    if not (isinstance(merge, list) and len(merge) == 2 and all(_is_int(m) and 1 <= m <= 16 for m in merge)):
        raise _bad(path, "vision_config.merge_kernel_size", "must be two integers from 1 to 16")
    if not isinstance(text.get("rope_scaling") or {}, dict):
        raise _bad(path, "text_config.rope_scaling", "must be an object or null")
    if not isinstance(text.get("hidden_act", "silu"), str):
        raise _bad(path, "text_config.hidden_act", "must be a string")


def check_size(path: Path, parameters: int) -> None:
    """Refuse a config whose parameter count no machine could allocate."""
    if parameters > MAX_PARAMETERS:
        raise ModelLoadError(
            f"{path}: the config describes {parameters / 1e9:,.0f} billion parameters "
            f"(Kimi-VL-A3B has 16); refusing to allocate it", hint=_HINT)


def refuse_pickled_only(model_dir: Path) -> None:
    """A directory whose only weights are pickles is refused, before any other file is looked at."""
    if not any(model_dir.glob("*.safetensors")):
        pickled = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
        if pickled:
            raise ModelLoadError(
                f"{model_dir}: only pickled weights ({pickled[0]}); kimi loads safetensors only, "
                "because unpickling a file can run code",
                hint="convert the weights to safetensors (e.g. load and save them with "
                "safetensors.torch.save_file on a machine you trust), or download the official checkpoint",
            )


def check_weight_files(model_dir: Path) -> list[Path]:
    """The directory's safetensors files, each header checked; pickled weights alone are refused."""
    refuse_pickled_only(model_dir)
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise ModelLoadError(f"{model_dir}: no *.safetensors weights", hint="the download may be incomplete")
    for shard in shards:
        check_safetensors_header(shard)
    return shards


def check_safetensors_header(path: Path) -> int:
    """Read one safetensors header, check every tensor's dtype, shape and byte range; returns the
    number of elements it stores."""
    return _checked_header(path)[3]


def read_safetensors_header(path: Path) -> tuple[MappingProxyType[str, Any], int, int]:
    """(tensor entries, read-only; the byte where the data starts; bytes of data) of one safetensors
    file, the header parsed as untrusted input (its length, JSON, a JSON object; `__metadata__` left
    out) and every entry checked by `check_tensor_entry`."""
    return _checked_header(path)[:3]


def _checked_header(path: Path) -> tuple[MappingProxyType[str, Any], int, int, int]:
    def read() -> tuple[MappingProxyType[str, Any], int, int, int]:
        header, base, data_bytes = _parse_header(path)
        elements = sum(check_tensor_entry(path, name, info, data_bytes) for name, info in header.items())
        return MappingProxyType(header), base, data_bytes, elements

    return memoized("safetensors header", path, read)


def _parse_header(path: Path) -> tuple[dict[str, Any], int, int]:
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise _header(path, "header length is impossible (truncated or not safetensors)")
            header = json_loads(f.read(length).decode("utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read ({exc.strerror or exc})", hint="check the file") from None
    except (UnicodeDecodeError, ValueError):
        raise _header(path, "header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _header(path, "header is not a JSON object")
    header.pop("__metadata__", None)
    return header, 8 + length, size - 8 - length


def check_tensor_entry(path: Path, name: str, info: Any, data_bytes: int) -> int:
    """One header entry's dtype, shape and byte range checked against the data's size; its elements."""
    if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
        raise _header(path, f"tensor {name[:80]!r} has no known dtype")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise _header(path, f"tensor {name[:80]!r} has a bad shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _header(path, f"tensor {name[:80]!r} has bad data offsets")
    begin, end = offsets
    need = math.prod(shape) * DTYPE_BYTES[info["dtype"]]
    if not 0 <= begin <= end <= data_bytes or end - begin != need:
        raise _header(path, f"tensor {name[:80]!r} claims {need:,} bytes at {begin}..{end}, "
                            f"but the file holds {data_bytes:,} bytes of data (truncated or corrupt)")
    return math.prod(shape)


def check_against_weights(model_dir: Path, parameters: int) -> None:
    """Refuse a config that describes far more parameters than the weight files store.

    transformers allocates the model the config describes before it reads a tensor, so a config
    edited to huge sizes over small weights would try to allocate them; the headers say how many
    elements there really are. (Quantized formats that pack several values per element will need
    their own count here.)
    """
    stored = sum(check_safetensors_header(p) for p in sorted(model_dir.glob("*.safetensors")))
    if parameters > stored * 1.25 + 1_000_000:
        raise ModelLoadError(
            f"{model_dir / 'config.json'}: the config describes {parameters:,} parameters but the "
            f"weight files hold {stored:,}", hint=_HINT)


def _header(path: Path, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{path}: cannot load weights (corrupt safetensors file: {problem})",
                          hint="the download may be incomplete; re-download the model")
