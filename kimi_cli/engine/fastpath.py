"""The GPU fast path behind the engine: multimodal prefill, then `FastDecoder`'s graph-captured decode.

The prompt's embeddings are built the way the native model builds them (token embeddings, image
features scattered onto the `<|media_pad|>` positions in order), then prefilled through the language
model into the fast decoder's latent cache. Decoding replays one CUDA graph per token. As in the plain
path, a later turn keeps the longest cached prefix (compared by token and image content); when what
is left is a few text tokens, they go through the decode step rather than a prefill.
"""

from __future__ import annotations

from typing import Any

from kimi_cli.engine.plain import prompt_keys, reusable_prefix

#: An uncached suffix of at most this many text tokens (a repeated request's last token, a short
#: follow-up) runs through the decode step instead of a transformers forward.
SHORT_SUFFIX = 8


def short_text_suffix(length: int, runs: list[tuple[int, int]], keep: int) -> bool:
    """Whether the `length - keep` tokens after the cached `keep` are few and hold no image."""
    return 0 < length - keep <= SHORT_SUFFIX and all(end <= keep for _, end in runs)


class FastPathDecoder:
    """Prefill + decode through `kimi_cli.engine.fast.FastDecoder`; state persists across turns."""

    def __init__(self, loaded: Any, keyed: bool = True) -> None:
        self.loaded = loaded
        self.model = loaded.model
        #: Key images by content so a later turn can reuse them; a one-shot turn skips the hashing.
        self.keyed = keyed
        self.fast: Any = None
        #: Cache keys of every position in the fast cache (token ids or image-content keys).
        self.ids: list[Any] = []
        self.reused = 0

    def prefill(self, prompt: Any, max_new_tokens: int) -> Any:
        """Prefill the part of the prompt that is not cached yet; returns float32 logits [vocab].

        First waits for a kernel warm-up still compiling (`prewarm`): the vision rope and the decode
        step would otherwise compile the same kernels again, here.
        """
        from kimi_cli.engine.fast.prewarm import wait_pending

        wait_pending()
        ids, runs, keys = prompt_keys(prompt, self.loaded.tokenizer.media_pad_id, self.keyed)
        reuse = self._room_for(len(ids) + max_new_tokens) and self.keyed
        keep = reusable_prefix(self.ids, keys, runs) if reuse else 0
        self.fast.truncate(keep)
        self.reused = keep
        if short_text_suffix(len(ids), runs, keep):
            logits = self.fast.feed(ids[keep:])
        else:
            logits = self.fast.prefill(prompt_embeddings(self.loaded, prompt, ids, runs, keep))
        self.ids = keys
        return logits

    def _room_for(self, length: int) -> bool:
        """Make sure the decoder holds `length` positions; False when it had to be replaced (no reuse)."""
        from kimi_cli.engine.fast import FastDecoder, bucket_length

        if self.fast is not None and length < self.fast.max_len:
            return True
        self.fast = None  # its cache and graphs are freed before the larger ones are allocated
        lm = self.model.model.language_model
        self.fast = FastDecoder(lm, self.model.lm_head, bucket_length(length + 1), self.model.device,
                                self.model.dtype)
        self.ids = []
        return False

    def tokens(self, logits: Any, settings: Any, stop_ids: tuple[int, ...], max_new_tokens: int,
               steer: Any = None) -> Any:
        """Yield sampled token ids (a stop id is yielded, then the iterator ends); `steer` as in the
        plain path (then each step's token is chosen on the host, outside the CUDA graph)."""
        generated: list[int] = []
        try:
            for token in self.fast.generate_tokens(logits, settings, max_new_tokens, stop_ids, steer):
                generated.append(token)
                yield token
        finally:
            # The fast cache holds every yielded token but possibly the last; keep exactly the
            # fed ones, as the plain path does, so a later turn's prefix match is exact.
            fed = generated[:-1]
            self.fast.truncate(len(self.ids) + len(fed))
            self.ids = self.ids + fed


def image_features(model: Any, pixel_values: Any, grid: Any, host_grid: Any = None) -> Any:
    """Vision tower + projector: the features of every image, concatenated [tokens, hidden].

    With `host_grid` (the numpy grids `grid` was made from) nothing is read back from the GPU: the
    attention's sequence bounds are given to transformers on the host (its SDPA path reads them back,
    `tolist`, in every one of the 27 layers, each time waiting for the GPU), and so are the merge
    index and the images' token counts.
    """
    import torch
    from transformers.utils.generic import is_flash_attention_requested

    from kimi_cli.engine.fast.vision_rope import patched

    inner = model.model
    with patched():  # the vision tower's rope as one kernel (CUDA tensors only), for this call only
        # (flash attention's varlen kernels take the bounds on the device: nothing is handed over there)
        if host_grid is None or is_flash_attention_requested(inner.vision_tower.config):
            return torch.cat(list(inner.get_image_features(pixel_values, grid).pooler_output), dim=0)
        # `get_image_features` is the tower and the projector, then a split per image that reads the
        # grid back from the device (which would hold the CPU until the tower is done, instead of
        # letting it queue the language model's prefill behind it); the split's concatenation is the
        # projector's output itself
        tower = inner.vision_tower(pixel_values, grid_thw=grid, cu_seqlens=host_cu_seqlens(host_grid),
                                   temporal_merge_index=host_merge_index(inner.vision_tower, host_grid, grid.device))
        return inner.mm_projector(tower.pooler_output).squeeze(1)


def host_cu_seqlens(grid: Any) -> Any:
    """The vision attention's sequence bounds for the host's [N, 3] `grid`, as a CPU tensor: transformers'
    own `get_vision_cu_seqlens` (a whole clip is one sequence, as kimi_k25 attends)."""
    import torch
    from transformers.vision_utils import get_vision_cu_seqlens

    return get_vision_cu_seqlens(torch.from_numpy(grid), merge_temporal=True)


def host_merge_index(tower: Any, grid: Any, device: Any) -> tuple[Any, Any, int]:
    """transformers' own temporal-merge index of the tower's output (`get_vision_temporal_merge_index`),
    computed from the host's [N, 3] `grid` and sent to `device` before the tower runs: computed inside
    it, from the device grid, its token count is read back after the 27 layers, holding the CPU until
    the tower is done."""
    import torch
    from transformers.models.kimi_k25.modeling_kimi_k25 import get_vision_temporal_merge_index

    index, weight, tokens = get_vision_temporal_merge_index(torch.from_numpy(grid), *tower.merge_kernel_size)
    return index.to(device), weight.to(device), int(tokens)


def prompt_embeddings(loaded: Any, prompt: Any, ids: list[int], runs: list[tuple[int, int]], keep: int) -> Any:
    """Input embeddings [1, L, hidden] of `ids[keep:]`, with the features of the images in that suffix
    scattered onto their `<|media_pad|>` positions in order, as the native model builds them.

    The fast path's prefill input; `kimi bench` times and checks this same function.
    """
    import torch

    from kimi_cli.engine.plain import suffix_grid, suffix_images

    model = loaded.model
    device = model.device
    suffix = torch.tensor([ids[keep:]], device=device)
    embeds = model.get_input_embeddings()(suffix)
    pixel_values, grid = suffix_images(prompt, runs, keep, device, model.dtype)
    if pixel_values is None:
        return embeds
    features = image_features(model, pixel_values, grid, suffix_grid(prompt, runs, keep)).to(embeds.dtype)
    spans = [(start - keep, end - keep) for start, end in runs if start >= keep]
    if sum(end - start for start, end in spans) != features.shape[0]:  # (shapes: known on the host)
        raise ValueError(f"{features.shape[0]} image features for {len(spans)} runs of media pads")
    # each image's features onto its run of pads, in order: what `masked_scatter` over the pad mask
    # computes, from positions known on the host (the mask's would be found on the device)
    at = 0
    for start, end in spans:
        embeds[0, start:end] = features[at:at + end - start]
        at += end - start
    return embeds
