"""FastDecoder against transformers' own forward and generate() on a tiny random DeepSeek-V3 (float32, CPU)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import DynamicCache  # noqa: E402

from kimi_cli.engine.fast import FastDecoder, SamplingParams, bucket_length  # noqa: E402
from kimi_cli.engine.fast.synthetic import build_model  # noqa: E402
from kimi_cli.model.compat import cache_kwarg  # noqa: E402

STEPS = 24


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("tiny", seed=0)


def _decoder(model, max_len: int = 128, device: str = "cpu", dtype=torch.float32) -> FastDecoder:
    return FastDecoder(model.model, model.lm_head, max_len, device, dtype)


def _prompt(model, n: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.config.vocab_size, (1, n), generator=g)


@pytest.mark.slow
@torch.no_grad()
def test_prefill_and_steps_match_transformers_forward(model):
    ids = _prompt(model)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, use_cache=True, **cache_kwarg(model, cache))
    dec = _decoder(model)
    logits = dec.prefill(model.model.embed_tokens(ids))
    torch.testing.assert_close(logits, out.logits[0, -1].float(), rtol=1e-5, atol=1e-5)
    for _ in range(STEPS):
        token = out.logits[0, -1].argmax().view(1, 1)
        out = model(input_ids=token, use_cache=True, **cache_kwarg(model, cache))
        logits = dec.step(token.view(1))
        torch.testing.assert_close(logits, out.logits[0, -1].float(), rtol=1e-5, atol=1e-5)
    assert dec.length == ids.shape[1] + STEPS


@torch.no_grad()
def test_prefill_fills_the_latent_cache_like_dynamic_cache(model):
    ids = _prompt(model, 12)
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, use_cache=True, **cache_kwarg(model, cache))
    dec = _decoder(model)
    dec.prefill(model.model.embed_tokens(ids))
    for i, layer in enumerate(cache.layers):
        torch.testing.assert_close(dec.cache.c[i, :12], layer.keys[0, 0])
        torch.testing.assert_close(dec.cache.k[i, :12], layer.values[0, 0])


@torch.no_grad()
def test_prefill_continues_after_cached_positions(model):
    ids = _prompt(model, 15)
    full = model(input_ids=ids).logits[0, -1].float()
    dec = _decoder(model)
    embeds = model.model.embed_tokens(ids)
    dec.prefill(embeds[:, :10])
    logits = dec.prefill(embeds[:, 10:])
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_short_text_suffix_fed_through_the_step_matches_the_prefill(model):
    ids = _prompt(model, 15)
    full = model(input_ids=ids).logits[0, -1].float()
    dec = _decoder(model)
    dec.prefill(model.model.embed_tokens(ids[:, :12]))
    logits = dec.feed(ids[0, 12:].tolist())
    torch.testing.assert_close(logits, full, rtol=1e-5, atol=1e-5)
    assert dec.length == 15


@pytest.mark.parametrize(("length", "runs", "keep", "short"), [
    (100, [], 99, True),  # a repeated request: only its last token is new
    (100, [(10, 60)], 92, True),  # the image is cached
    (100, [(10, 60)], 10, False),  # the image is not
    (100, [(95, 99)], 94, False),  # an image in the suffix
    (100, [], 92, True),
    (100, [], 91, False),  # nine tokens: a prefill
    (100, [], 100, False),  # nothing new (never happens: one token is always recomputed)
])
def test_which_suffixes_go_through_the_step(length, runs, keep, short):
    from kimi_cli.engine.fastpath import short_text_suffix

    assert short_text_suffix(length, runs, keep) is short


@pytest.mark.slow
def test_greedy_tokens_identical_to_generate(model):
    ids = _prompt(model, 7, seed=3)
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=STEPS, do_sample=False, eos_token_id=None, pad_token_id=0)
        dec = _decoder(model)
        first = dec.prefill(model.model.embed_tokens(ids))
    tokens = list(dec.generate_tokens(first, SamplingParams(), STEPS))
    assert tokens == ref[0, ids.shape[1] :].tolist()


def test_generate_stops_after_a_stop_id(model):
    ids = _prompt(model, 7, seed=3)
    with torch.no_grad():
        dec = _decoder(model)
        first = dec.prefill(model.model.embed_tokens(ids))
    tokens = list(dec.generate_tokens(first, None, STEPS))
    stop = tokens[5]
    dec.reset()
    with torch.no_grad():
        first = dec.prefill(model.model.embed_tokens(ids))
    again = list(dec.generate_tokens(first, None, STEPS, stop_ids=[stop]))
    assert again == tokens[: tokens.index(stop) + 1]


def test_truncate_reuses_a_shared_prefix(model):
    ids = _prompt(model, 14)
    dec = _decoder(model)
    embeds = model.model.embed_tokens(ids).detach()
    expected = dec.prefill(embeds)
    other = torch.cat([embeds[:, :8], model.model.embed_tokens(_prompt(model, 6, seed=9)).detach()], dim=1)
    dec.reset()
    dec.prefill(other)
    dec.truncate(8)
    torch.testing.assert_close(dec.prefill(embeds[:, 8:]), expected)
    with pytest.raises(ValueError):
        dec.truncate(99)


def test_works_inside_and_outside_inference_mode(model):
    ids = _prompt(model, 6)
    with torch.inference_mode():
        dec = _decoder(model)
        embeds = model.model.embed_tokens(ids)
        first = dec.prefill(embeds)
    a = list(dec.generate_tokens(first, None, 5))
    dec.reset()
    with torch.inference_mode():
        b = list(dec.generate_tokens(dec.prefill(embeds), None, 5))
    assert a == b


@pytest.mark.slow
def test_sampler_settings_objects_are_accepted(model):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Settings:
        temperature: float = 0.7
        top_p: float = 0.9
        seed: int | None = 3

    dec = _decoder(model)
    embeds = model.model.embed_tokens(_prompt(model, 6)).detach()
    runs = []
    for _ in range(2):
        dec.reset()
        runs.append(list(dec.generate_tokens(dec.prefill(embeds), Settings(), 12)))
    assert runs[0] == runs[1]
    assert SamplingParams.coerce(Settings()) == SamplingParams(0.7, 0.9, 3)


def test_cache_overflow_is_an_error(model):
    dec = _decoder(model, max_len=16)
    with pytest.raises(ValueError), torch.no_grad():
        dec.prefill(model.model.embed_tokens(_prompt(model, 16)))


@pytest.mark.parametrize(("tokens", "expected"), [(1, 1024), (1024, 1024), (1025, 2048), (33000, 33792)])
def test_bucket_length(tokens, expected):
    assert bucket_length(tokens) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_decode_matches_eager_reference_on_gpu():
    model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=0)
    ids = _prompt(model, 9).cuda()
    with torch.no_grad():
        embeds = model.model.embed_tokens(ids)
        ref = FastDecoder(model.model, model.lm_head, 256, "cuda", torch.bfloat16, backend="torch")
        ref.graphs = None
        fast = FastDecoder(model.model, model.lm_head, 256, "cuda", torch.bfloat16)
        a, b = ref.prefill(embeds), fast.prefill(embeds)
        for _ in range(STEPS):
            token = a.argmax().view(1)
            a, b = ref.step(token), fast.step(token)
            assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_sampling_is_seeded_and_greedy_matches_eager_on_gpu():
    model = build_model("tiny", device="cuda", dtype=torch.bfloat16, seed=0)
    ids = _prompt(model, 9).cuda()
    dec = FastDecoder(model.model, model.lm_head, 256, "cuda", torch.bfloat16)
    runs = []
    for params in [SamplingParams(0.8, 0.9, seed=5), SamplingParams(0.8, 0.9, seed=5), SamplingParams()]:
        dec.reset()
        with torch.no_grad():
            first = dec.prefill(model.model.embed_tokens(ids))
        runs.append(list(dec.generate_tokens(first, params, 40)))
    assert runs[0] == runs[1]
    assert all(0 <= t < model.config.vocab_size for t in runs[0])
    eager = FastDecoder(model.model, model.lm_head, 256, "cuda", torch.bfloat16)
    eager.graphs = None
    with torch.no_grad():
        first = eager.prefill(model.model.embed_tokens(ids))
    assert list(eager.generate_tokens(first, None, 40)) == runs[2]
