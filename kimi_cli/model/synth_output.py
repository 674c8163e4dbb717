"""Write a synthetic checkpoint into a directory safely: room checked first, all or nothing, no symlinks.

`synthesize` is what `kimi synth` and `kimi bench --synthetic-full` call. The checkpoint is built in
a hidden temporary directory next to the target (same file system), so that

* a failure or Ctrl-C part-way leaves nothing behind (the temporary directory is removed on any
  exception, `KeyboardInterrupt` included), not a 4.7 GB hidden shard;
* files land by `os.replace`, which replaces a directory entry and never follows a symlink planted
  at the destination: `DIR/config.json -> /elsewhere` is replaced by our file, `/elsewhere` stays;
* free space is checked against the preset's size before the first byte is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from kimi_cli.errors import ModelLoadError, UsageError

PRESET_NAMES = ("tiny", "tiny-thinking", "full")
#: Tokenizer, configs and file-system slack on top of the weights.
_MARGIN_BYTES = 64 * 2**20


def preset_bytes(preset: str) -> int:
    """Bytes a preset's checkpoint takes on disk (its weights plus a margin), without writing it."""
    from kimi_cli.model.synthetic import get_preset, tensor_shapes

    p = get_preset("tiny" if preset == "tiny-thinking" else preset)
    width = 4 if p.text["torch_dtype"] == "float32" else 2
    total = 0
    for name, shape in tensor_shapes(p.text, p.vision):
        count = 1
        for dim in shape:
            count *= dim
        total += count * (4 if name.endswith("e_score_correction_bias") else width)
    return total + _MARGIN_BYTES


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(out_dir: Path, need: int, what: str) -> None:
    """Refuse, before writing, a checkpoint that the file system holding `out_dir` has no room for."""
    where = _existing_ancestor(out_dir)
    free = shutil.disk_usage(where).free
    if free < need:
        raise ModelLoadError(
            f"{out_dir}: not enough disk space for {what}: needs {need / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB free on {where}",
            hint="free some space or choose a directory on a larger disk",
        )


def check_target(out_dir: Path, force: bool) -> None:
    """`out_dir` must be absent, an empty directory, or (with `force`) any directory."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise UsageError(f"{out_dir}: is a dangling symlink", hint="remove it or pass another path")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not force)):
        raise UsageError(f"{out_dir}: exists and is not an empty directory", hint="pass --force or another path")


def write_atomically(out_dir: Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp)` in a fresh hidden directory beside `out_dir`, then move its files into place.

    On any exception (Ctrl-C too) the temporary directory is removed and `out_dir` is as it was
    (a new `out_dir` is not created at all). Existing entries of the same names in `out_dir` are
    replaced, symlinks included, never written through.
    """
    out_dir = Path(out_dir)
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.kimi-synth-", dir=parent))
    try:
        write(tmp)
        if not out_dir.exists() and not out_dir.is_symlink():
            tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; a new directory gets the usual mode
            os.rename(tmp, out_dir)
            return out_dir
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, out_dir / entry.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_request(out_dir: Path, preset: str, force: bool) -> None:
    """The checks `synthesize` makes before writing (no heavy imports): preset, target, free space."""
    if preset not in PRESET_NAMES:
        raise UsageError(f"--preset {preset}: unknown preset", hint="use one of: " + ", ".join(PRESET_NAMES))
    check_target(Path(out_dir), force)
    # tiny-thinking also builds a tiny checkpoint in the system temporary directory to fit it.
    check_free_space(Path(out_dir), preset_bytes(preset), f"the {preset} checkpoint")


def synthesize(out_dir: Path, preset: str = "tiny", seed: int = 0, device: str = "cpu",
               force: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the `preset` checkpoint to `out_dir`, checked and all-or-nothing (see the module notes).

    `progress(done, total)` is called as the tiny-thinking fit advances.
    """
    out_dir = Path(out_dir)
    check_request(out_dir, preset, force)
    if preset == "tiny-thinking":
        from kimi_cli.model.fitted import write_thinking_checkpoint

        writer: Callable[[Path], object] = lambda tmp: write_thinking_checkpoint(tmp, seed=seed, progress=progress)  # noqa: E731
    else:
        from kimi_cli.model.synthetic import write_checkpoint

        writer = lambda tmp: write_checkpoint(tmp, preset=preset, seed=seed, device=device)  # noqa: E731
    try:
        return write_atomically(out_dir, writer)
    except OSError as exc:
        raise ModelLoadError(f"{out_dir}: cannot write the checkpoint ({exc.strerror or exc})",
                             hint="check the directory's permissions and free space") from None
