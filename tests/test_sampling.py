"""Sampling: greedy, temperature and top-p, reproducible with a seed."""

from __future__ import annotations

import torch

from kimi_cli.conversation import GenerationSettings
from kimi_cli.engine.sampling import make_generator, sample_next


def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    settings = GenerationSettings(temperature=0)
    assert int(sample_next(logits, settings, make_generator(settings, "cpu"))) == 1


def test_seed_reproduces_samples():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    settings = GenerationSettings(temperature=0.8, seed=7)
    runs = []
    for _ in range(2):
        gen = make_generator(settings, "cpu")
        runs.append([int(sample_next(logits, settings, gen)) for _ in range(20)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1  # it does sample, not argmax


def test_top_p_keeps_only_the_nucleus():
    # Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.7 keeps the first two tokens only.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    settings = GenerationSettings(temperature=1.0, top_p=0.7, seed=0)
    gen = make_generator(settings, "cpu")
    seen = {int(sample_next(logits, settings, gen)) for _ in range(300)}
    assert seen == {0, 1}


def test_tiny_top_p_is_greedy():
    logits = torch.tensor([1.0, 5.0, 2.0])
    settings = GenerationSettings(temperature=1.0, top_p=1e-6, seed=3)
    gen = make_generator(settings, "cpu")
    assert {int(sample_next(logits, settings, gen)) for _ in range(50)} == {1}
