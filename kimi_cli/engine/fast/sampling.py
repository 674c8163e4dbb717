"""Token choice on the device, capturable in a CUDA graph: greedy, temperature and top-p.

Random sampling uses the exponential race: with E_i ~ Exp(1) i.i.d., argmax_i p_i / E_i is distributed as
Categorical(p). The noise is drawn from a seeded `torch.Generator` outside the graph (one small kernel per
token) so that the graph itself stays deterministic and the seed reproduces a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each token: temperature 0 means greedy (argmax, as transformers' greedy search)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """Whether this is plain argmax."""
        return self.temperature <= 0.0

    @classmethod
    def coerce(cls, settings: object | None) -> SamplingParams:
        """From None (greedy), a SamplingParams, or any object with temperature / top_p / seed attributes."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        return cls(
            temperature=float(getattr(settings, "temperature", 0.0)),
            top_p=float(getattr(settings, "top_p", 1.0)),
            seed=getattr(settings, "seed", None),
        )

    def key(self) -> tuple[float, float]:
        """What a captured graph depends on (the seed is not baked in)."""
        return (0.0, 1.0) if self.greedy else (float(self.temperature), float(self.top_p))


class DeviceSampler:
    """Chooses a token from float32 logits [vocab] without leaving the device."""

    def __init__(self, params: SamplingParams, vocab: int, device: torch.device) -> None:
        self.params = params
        self.noise = torch.ones(vocab, device=device, dtype=torch.float32)
        self.generator = torch.Generator(device=device)
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()

    def refresh(self) -> None:
        """Draw fresh noise for the next choice (eager; call before each graph replay)."""
        if not self.params.greedy:
            self.noise.exponential_(generator=self.generator)

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Return the chosen token id as an int64 tensor [1] (uses the current noise)."""
        p = self.params
        if p.greedy:
            return torch.argmax(logits).view(1)
        probs = torch.softmax(logits / p.temperature, dim=-1)
        if p.top_p >= 1.0:
            return torch.argmax(probs / self.noise).view(1)
        sorted_p, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before > p.top_p, 0.0)
        return order.gather(0, torch.argmax(sorted_p / self.noise).view(1))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Draw noise, then choose (for eager use)."""
        self.refresh()
        return self.choose(logits)
