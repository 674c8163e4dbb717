"""Shared fixtures: one tiny synthetic checkpoint (and its loaded model) per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub; make that explicit so nothing waits on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Skip `gpu`-marked tests cleanly when no CUDA device is visible."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A `kimi synth --preset tiny` checkpoint, written once per session."""
    from kimi_cli.model.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    """The tiny checkpoint loaded on the CPU through the public loader."""
    from kimi_cli.model.checkpoint import load_model

    return load_model(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def thinking_checkpoint(tmp_path_factory) -> Path:
    """A `kimi synth --preset tiny-thinking` checkpoint: replies `◁think▷…◁/think▷answer`."""
    from kimi_cli.model.fitted import write_thinking_checkpoint

    return write_thinking_checkpoint(tmp_path_factory.mktemp("thinking") / "ckpt", seed=0)
