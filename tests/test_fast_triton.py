"""The Triton decode step against the torch reference step.

Runs on a GPU, or on a CPU under Triton's interpreter (`TRITON_INTERPRET=1` with Triton installed);
skipped where neither is available (CI has no Triton).
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from kimi_cli.engine.fast import FastDecoder  # noqa: E402
from kimi_cli.engine.fast.synthetic import build_model  # noqa: E402
from kimi_cli.engine.fast.triton_kernels import HAVE_TRITON  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = [
    pytest.mark.skipif(
        not HAVE_TRITON or not (INTERPRET or torch.cuda.is_available()),
        reason="needs Triton and a GPU (or TRITON_INTERPRET=1)",
    ),
    *([] if INTERPRET else [pytest.mark.gpu]),
]
DEVICE = "cpu" if INTERPRET else "cuda"


def _pair(dtype, **overrides):
    model = build_model("tiny", device=DEVICE, dtype=dtype, seed=2, **overrides)
    ref = FastDecoder(model.model, model.lm_head, 96, DEVICE, dtype, backend="torch")
    fast = FastDecoder(model.model, model.lm_head, 96, DEVICE, dtype, backend="triton")
    ref.graphs = fast.graphs = None  # compare the eager steps
    return model, ref, fast


def _close(a, b, dtype):
    if dtype == torch.float32 and INTERPRET:
        torch.testing.assert_close(b, a, rtol=2e-4, atol=2e-4)
    else:
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.995
        assert (a - b).abs().max() < 0.05 * a.abs().max()


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float32] if INTERPRET else [torch.float32, torch.bfloat16])
def test_triton_step_matches_torch_step(dtype):
    model, ref, fast = _pair(dtype)
    ids = torch.randint(3, model.config.vocab_size, (1, 11), generator=torch.Generator().manual_seed(4))
    embeds = model.model.embed_tokens(ids.to(DEVICE))
    a, b = ref.prefill(embeds), fast.prefill(embeds)
    _close(a, b, dtype)
    for _ in range(8 if INTERPRET else 40):
        token = a.argmax().view(1)
        a, b = ref.step(token), fast.step(token)
        _close(a, b, dtype)


@torch.no_grad()
def test_many_attention_splits_combine_correctly():
    from kimi_cli.engine.fast.step import KernelConfig

    model = build_model("tiny", device=DEVICE, dtype=torch.float32, seed=5)
    ref = FastDecoder(model.model, model.lm_head, 512, DEVICE, torch.float32, backend="torch")
    cfg = KernelConfig(attn_block=16, max_splits=8, gemv_block_n=16)
    fast = FastDecoder(
        model.model, model.lm_head, 512, DEVICE, torch.float32, backend="triton", kernel_config=cfg
    )
    ref.graphs = fast.graphs = None
    ids = torch.randint(3, model.config.vocab_size, (1, 150), generator=torch.Generator().manual_seed(6))
    embeds = model.model.embed_tokens(ids.to(DEVICE))
    a, b = ref.prefill(embeds), fast.prefill(embeds)
    for _ in range(3):
        token = a.argmax().view(1)
        a, b = ref.step(token), fast.step(token)
        _close(a, b, torch.float32 if INTERPRET else torch.bfloat16)
