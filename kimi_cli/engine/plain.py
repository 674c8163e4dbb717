"""The plain transformers decode path: the native model's forward with a dynamic KV cache.

It is the reference the fast path is checked against, and the fallback (`--engine plain`). It can
start from the cache of an earlier turn: the longest common prefix of token ids is kept (never cutting
through an image's placeholder run), and only the rest of the prompt is computed, so images already
seen are not encoded again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kimi_cli.model.compat import cache_kwarg


def image_runs(ids: list[int], pad_id: int) -> list[tuple[int, int]]:
    """(start, end) of each contiguous run of image placeholder ids, in order."""
    runs: list[tuple[int, int]] = []
    start = None
    for i, tok in enumerate(ids):
        if tok == pad_id and start is None:
            start = i
        elif tok != pad_id and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(ids)))
    return runs


def cache_keys(ids: list[int], runs: list[tuple[int, int]], canvases: Sequence[Any]) -> list[Any]:
    """`ids` with each image placeholder replaced by (image digest, position in the image).

    The digest is of the image's uint8 canvas as the model sees it (after resize and padding).
    """
    import hashlib

    keys: list[Any] = list(ids)
    for (start, end), canvas in zip(runs, canvases, strict=True):
        digest = hashlib.blake2b(canvas.tobytes(), digest_size=16).hexdigest()
        keys[start:end] = [(digest, j) for j in range(end - start)]
    return keys


def prompt_keys(prompt: Any, pad_id: int, keyed: bool) -> tuple[list[int], list[tuple[int, int]], list[Any]]:
    """A prompt's token ids, image runs and cache keys (content-keyed only when a cache is kept)."""
    ids = list(prompt.input_ids)
    runs = image_runs(ids, pad_id)
    return ids, runs, cache_keys(ids, runs, prompt.canvases) if keyed else list(ids)


def reusable_prefix(cached: list[Any], ids: list[Any], runs: list[tuple[int, int]]) -> int:
    """How many leading tokens of `ids` can come from a cache built on `cached`.

    At least one token is always recomputed (its logits start the answer), and the cut never falls
    inside an image run: an image is encoded whole or not at all.
    """
    n = 0
    limit = min(len(cached), len(ids) - 1)
    while n < limit and cached[n] == ids[n]:
        n += 1
    for start, end in runs:
        if start < n < end:
            return start
    return n


def _first_suffix_image(prompt: Any, runs: list[tuple[int, int]], keep: int) -> int | None:
    if not prompt.canvases or not runs:
        return None
    first = next((i for i, (start, _) in enumerate(runs) if start >= keep), len(runs))
    return None if first == len(runs) else first


def _grids_from(prompt: Any, first: int) -> Any:
    import numpy as np

    grids = np.asarray(prompt.grid_hws)
    return np.concatenate([np.ones((len(grids) - first, 1), dtype=np.int64), grids[first:]], axis=1)


def suffix_grid(prompt: Any, runs: list[tuple[int, int]], keep: int) -> Any:
    """The [N, 3] (t=1, h, w) int64 numpy grids of the images placed after `keep` tokens, or None."""
    first = _first_suffix_image(prompt, runs, keep)
    return None if first is None else _grids_from(prompt, first)


def suffix_images(prompt: Any, runs: list[tuple[int, int]], keep: int, device: Any,
                  dtype: Any) -> tuple[Any, Any]:
    """Pixel values (made on `device`) and [1, h, w] grids of the images placed after `keep` tokens."""
    import torch

    from kimi_cli.model.image_processor import pixel_values_torch

    first = _first_suffix_image(prompt, runs, keep)
    if first is None:
        return None, None
    pv = pixel_values_torch(prompt.canvases[first:], prompt.processor, device, dtype)
    return pv, torch.from_numpy(_grids_from(prompt, first)).to(device)


def prefill_pieces(suffix: list[int], runs: list[tuple[int, int]], pixel_values: Any,
                   grid: Any) -> list[tuple[list[int], Any, Any]]:
    """The prefill in pieces: through the last image in one (with the pixels), then the text after it
    in chunks (`memory.prefill_chunks`, as the fast path cuts them), so a long text's activations stay bounded."""
    from kimi_cli.model.memory import prefill_chunks

    split = max((end for _, end in runs), default=0) if pixel_values is not None else 0
    pieces = [(suffix[:split], pixel_values, grid)] if split else []
    rest = suffix[split:]
    pieces += [(rest[lo:hi], None, None) for lo, hi in prefill_chunks(len(rest))]
    return pieces


class PlainDecoder:
    """Prefill then step, one token at a time, through `Kimi_K25ForConditionalGeneration`.

    Holds the dynamic KV cache and its keys between turns (the engine keeps the instance when
    asked to keep the conversation's cache).
    """

    def __init__(self, loaded: Any, keyed: bool = True) -> None:
        self.loaded = loaded
        self.model = loaded.model
        #: Key images by content so a later turn can reuse them; a one-shot turn skips the hashing.
        self.keyed = keyed
        self.cache: Any = None
        #: Cache keys of every position in the cache: token ids, or (image digest, index) pairs.
        self.ids: list[Any] = []
        self.reused = 0

    def prefill(self, prompt: Any, max_new_tokens: int = 0) -> Any:
        """Run the prompt (reusing a cached prefix when possible); returns the last logits [vocab]."""
        import torch
        from transformers import DynamicCache

        ids, runs, keys = prompt_keys(prompt, self.loaded.tokenizer.media_pad_id, self.keyed)
        keep = reusable_prefix(self.ids, keys, runs) if self.cache is not None and self.keyed else 0
        if keep > 0:
            extra = self.cache.get_seq_length() - keep
            if extra > 0:
                self.cache.crop(-extra)  # transformers 5 takes the number of tokens to drop
        else:
            self.cache = DynamicCache(config=self.model.config.text_config)
        self.reused = keep
        device = self.model.device
        pixel_values, grid = suffix_images(prompt, runs, keep, device, self.model.dtype)
        for piece, pv, thw in prefill_pieces(ids[keep:], [(a - keep, b - keep) for a, b in runs if b > keep],
                                             pixel_values, grid):
            input_ids = torch.tensor([piece], device=device)
            out = self.model(input_ids=input_ids, pixel_values=pv, image_grid_thw=thw,
                             use_cache=True, logits_to_keep=1, **cache_kwarg(self.model, self.cache))
        self.ids = keys
        return out.logits[0, -1]

    def step(self, token: int) -> Any:
        """Feed one generated token; returns the next logits [vocab]."""
        import torch

        self.ids.append(token)
        input_ids = torch.tensor([[token]], device=self.model.device)
        out = self.model(input_ids=input_ids, use_cache=True, **cache_kwarg(self.model, self.cache))
        return out.logits[0, -1]

    def tokens(self, logits: Any, settings: Any, stop_ids: tuple[int, ...], max_new_tokens: int,
               steer: Any = None) -> Any:
        """Yield sampled token ids, feeding each back; a stop id is yielded, then the iterator ends.

        With `steer` (`kimi_cli.engine.steering.Steering`) each token is the steering's choice:
        forced (the thinking budget's close marker) or sampled from grammar-masked logits.
        """
        from kimi_cli.engine.sampling import make_generator, sample_next

        gen = make_generator(settings, logits.device)

        def sample(values: Any) -> int:
            return int(sample_next(values, settings, gen))

        for i in range(max_new_tokens):
            token = steer.next(logits, sample) if steer is not None else sample(logits)
            yield token
            if token in stop_ids or i + 1 == max_new_tokens:
                return
            logits = self.step(token)
