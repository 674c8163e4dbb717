"""Token sampling on the device: greedy, temperature and nucleus (top-p), reproducible with a seed."""

from __future__ import annotations

from typing import Any

from kimi_cli.conversation import GenerationSettings


def make_generator(settings: GenerationSettings, device: Any) -> Any:
    """A torch.Generator seeded from `settings.seed` (random when no seed is given)."""
    import torch

    gen = torch.Generator(device=device)
    if settings.seed is None:
        gen.seed()
    else:
        gen.manual_seed(settings.seed)
    return gen


def sample_next(logits: Any, settings: GenerationSettings, generator: Any) -> Any:
    """Pick the next token id from `logits` [vocab] (a 0-d tensor on the logits' device).

    temperature <= 0 is greedy. top_p < 1 keeps the smallest set of tokens whose probability
    mass reaches top_p (the most likely token is always kept).
    """
    import torch

    if settings.temperature <= 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < settings.top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
