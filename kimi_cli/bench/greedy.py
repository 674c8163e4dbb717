"""Greedy agreement between our engine and the plain transformers path on the same inputs.

Free-running tokens can part at the first near-tie of the logits, after which they share nothing, so
the check has three parts: the divergence point of the free-running greedy tokens; a teacher-forced
comparison (both paths fed the plain path's tokens: argmax agreements and the largest |logit
difference|); and the same comparison between the plain path and one full forward over the prompt and
those tokens, a third bf16 computation of the same logits that gives the noise floor to judge by.
Random weights make the logits flat and the bf16 forward chaotic (MoE routing flips), so on synthetic
checkpoints the floor is low; on real weights tokens should match for long stretches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kimi_cli.model.compat import cache_kwarg


@dataclass(frozen=True)
class GreedyCheck:
    """One input's agreement figures (logit differences are float32 absolute values)."""

    inputs: str
    compared: int
    same_prefix: int
    forced_agree: int
    forced_max_diff: float
    floor_agree: int | None = None
    floor_max_diff: float | None = None
    plain_top2_gap: float | None = None

    @property
    def identical(self) -> bool:
        """Whether the free-running tokens matched over every compared position."""
        return self.same_prefix >= self.compared

    def summary(self) -> str:
        """One line for the table."""
        text = f"{self.same_prefix}/{self.compared} same"
        if self.identical:
            return text
        text += f"; forced argmax {self.forced_agree}/{self.compared}, max diff {self.forced_max_diff:.3f}"
        if self.floor_agree is not None and self.floor_max_diff is not None:
            text += f" (noise floor {self.floor_agree}/{self.compared}, {self.floor_max_diff:.3f})"
        return text


def same_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def agreement(a: Sequence[Any], b: Sequence[Any]) -> tuple[int, float]:
    """(argmax agreements, max |a - b|) over two equally long lists of logit vectors."""
    same = sum(int(x.argmax() == y.argmax()) for x, y in zip(a, b, strict=True))
    diff = max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))
    return same, diff


def plain_greedy(language_model: Any, lm_head: Any, embeds: Any, n: int) -> tuple[list[int], list[Any]]:
    """The plain path from `inputs_embeds` [1, L, H]: DynamicCache prefill, then n - 1 greedy steps."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=language_model.config)
    out = language_model(inputs_embeds=embeds, use_cache=True, **cache_kwarg(language_model, cache))
    logits = [lm_head(out.last_hidden_state[0, -1]).float()]
    tokens = [int(logits[-1].argmax())]
    for _ in range(n - 1):
        ids = torch.tensor([[tokens[-1]]], device=embeds.device)
        out = language_model(input_ids=ids, use_cache=True, **cache_kwarg(language_model, cache))
        logits.append(lm_head(out.last_hidden_state[0, -1]).float())
        tokens.append(int(logits[-1].argmax()))
    return tokens, logits


def forced_logits(decoder: Any, embeds: Any, tokens: Sequence[int]) -> list[Any]:
    """Our decoder's logits along `tokens` (teacher forcing), starting from a fresh prefill of `embeds`."""
    import torch

    decoder.reset()
    out = [decoder.prefill(embeds)]
    for tok in tokens[: len(tokens) - 1]:
        out.append(decoder.step(torch.tensor([tok], device=embeds.device)))
    return out


def full_forward_logits(language_model: Any, lm_head: Any, embeds: Any, tokens: Sequence[int]) -> list[Any]:
    """One uncached forward over the prompt and `tokens[:-1]`: logits at the last len(tokens) positions."""
    import torch

    n = len(tokens)
    ids = torch.tensor([list(tokens[: n - 1])], device=embeds.device)
    seq = torch.cat([embeds, language_model.embed_tokens(ids)], dim=1) if n > 1 else embeds
    hidden = language_model(inputs_embeds=seq, use_cache=False).last_hidden_state[0, -n:]
    logits = lm_head(hidden).float()
    return [logits[i] for i in range(n)]


def check(name: str, ours: Sequence[int], plain: Sequence[int], plain_logits: Sequence[Any],
          forced: Sequence[Any], floor: Sequence[Any] | None = None) -> GreedyCheck:
    """Assemble a `GreedyCheck` from the free-running tokens and the teacher-forced logits."""
    import torch

    n = len(plain)
    agree, diff = agreement(forced[:n], plain_logits[:n])
    floor_agree, floor_diff = agreement(plain_logits[:n], floor[:n]) if floor is not None else (None, None)
    top2 = torch.stack([x.topk(2)[0] for x in plain_logits[:n]])
    return GreedyCheck(
        inputs=name, compared=n, same_prefix=min(same_prefix(ours, plain), n), forced_agree=agree,
        forced_max_diff=diff, floor_agree=floor_agree, floor_max_diff=floor_diff,
        plain_top2_gap=float((top2[:, 0] - top2[:, 1]).median()),
    )
