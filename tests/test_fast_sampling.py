"""Device token choice: greedy is argmax, the exponential race samples Categorical(p), seeds reproduce."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kimi_cli.engine.fast.sampling import DeviceSampler, SamplingParams  # noqa: E402


def _logits(seed: int = 0, vocab: int = 50) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_is_argmax():
    logits = _logits()
    sampler = DeviceSampler(SamplingParams(), logits.shape[0], torch.device("cpu"))
    assert sampler(logits).item() == logits.argmax().item()
    assert SamplingParams().greedy and not SamplingParams(temperature=0.7).greedy


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = _logits(1)
    sampler = DeviceSampler(SamplingParams(temperature=1.0, top_p=1e-6, seed=3), 50, torch.device("cpu"))
    assert {sampler(logits).item() for _ in range(20)} == {logits.argmax().item()}


def test_same_seed_same_tokens():
    logits = _logits(2)
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=7)
    a = DeviceSampler(params, 50, torch.device("cpu"))
    b = DeviceSampler(params, 50, torch.device("cpu"))
    assert [a(logits).item() for _ in range(30)] == [b(logits).item() for _ in range(30)]


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_exponential_race_matches_softmax_frequencies(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    sampler = DeviceSampler(SamplingParams(temperature=temperature, seed=11), 5, torch.device("cpu"))
    counts = torch.bincount(torch.cat([sampler(logits) for _ in range(6000)]), minlength=5).float()
    expected = torch.softmax(logits / temperature, dim=-1)
    assert (counts / counts.sum() - expected).abs().max() < 0.03


def test_top_p_drops_the_tail():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    sampler = DeviceSampler(SamplingParams(temperature=1.0, top_p=0.7, seed=5), 4, torch.device("cpu"))
    seen = {sampler(logits).item() for _ in range(400)}
    assert seen == {0, 1}


def test_graph_key_ignores_the_seed():
    assert SamplingParams(0.8, 0.95, seed=1).key() == SamplingParams(0.8, 0.95, seed=2).key()
    assert SamplingParams(0.0, 0.5).key() == SamplingParams().key()
