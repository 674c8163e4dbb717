"""Constrained decoding: answers that are JSON matching a schema, through llguidance.

Why llguidance (over xgrammar and outlines-core): one `abi3` wheel with no dependencies serves
every CPython from 3.9 (carry one file to an offline GPU machine for 3.11 and 3.12 alike); it builds
the grammar lazily (milliseconds for a schema, no up-front index over the vocabulary as outlines-core
builds) and computes a mask in tens of microseconds; it takes a tiktoken encoding directly (our
tokenizer is one); and it is the grammar engine behind vLLM's and SGLang's `guidance` backends and
llama.cpp's, maintained by Microsoft's guidance team. xgrammar is as fast but pulls in torch,
transformers, triton and pydantic as dependencies and ships one wheel per Python version.

The grammar covers the whole reply. For a thinking checkpoint it is a lazy free-text lexeme up to the
first `◁/think▷` (so a token that carries the marker and the answer's first characters is read
byte by byte, as the splitter reads it), then the JSON; otherwise the JSON alone. The steering
(`kimi_cli.engine.steering`) masks the logits only once the thinking is closed; during the thinking
a sampled token is only checked (a token the grammar refuses there, such as `<|im_end|>`, is
resampled under the mask). When the JSON is complete the mask allows only `<|im_end|>`: end of turn.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from kimi_cli.errors import UsageError
from kimi_cli.model.facts import THINK_CLOSE

#: `--json` without a schema: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: Compact JSON: no free whitespace between tokens, so a sampled run cannot drift into blanks.
_OPTIONS = {"whitespace_flexible": False}
_LL_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def lark_grammar(schema: dict[str, Any], thinks: bool) -> str:
    """The Lark-syntax grammar for a reply: optional free thinking up to the close marker, then JSON."""
    body = json.dumps({**schema, "x-guidance": {**_OPTIONS, **schema.get("x-guidance", {})}})
    if not thinks:
        return f"start: json\njson: %json {body}\n"
    close = THINK_CLOSE.replace("/", "\\/")
    return f"start: think json\nthink[lazy]: /(?s:.*){close}/\njson: %json {body}\n"


def check_schema(schema: dict[str, Any], where: str = "--json-schema") -> None:
    """Raise a `UsageError` when llguidance cannot compile `schema` (before any model loads)."""
    import llguidance

    error = llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(lark_grammar(schema, True)))
    if error and not error.startswith("WARNING"):
        first = error.strip().splitlines()[0][:300]
        raise UsageError(f"{where}: the schema cannot be used: {first}",
                         hint="use a JSON Schema of objects, strings, numbers, enums and arrays")


def ll_tokenizer(tokenizer: Any) -> Any:
    """llguidance's view of our tiktoken-based tokenizer (built once per tokenizer: ~1 s for 160k ids)."""
    if tokenizer not in _LL_TOKENIZERS:
        from llguidance.tiktoken import lltokenizer_from_encoding

        _LL_TOKENIZERS[tokenizer] = lltokenizer_from_encoding(
            tokenizer._encoding, n_vocab=tokenizer.vocab_size, eos_token=tokenizer.im_end_id)
    return _LL_TOKENIZERS[tokenizer]


class JsonGrammar:
    """One turn's matcher: checks and consumes tokens, and masks logits to what the grammar allows."""

    def __init__(self, tokenizer: Any, schema: dict[str, Any], thinks: bool) -> None:
        import llguidance
        import numpy as np

        self._np = np
        self.vocab = tokenizer.vocab_size
        self.matcher = llguidance.LLMatcher(ll_tokenizer(tokenizer),
                                            llguidance.LLMatcher.grammar_from_lark(lark_grammar(schema, thinks)),
                                            log_level=0)
        if self.matcher.is_error():
            raise UsageError(f"--json-schema: {self.matcher.get_error()[:300]}")
        self._bitmask = np.full(((self.vocab + 31) // 32,), -1, dtype=np.int32)

    def allows(self, token: int) -> bool:
        """Whether the grammar takes `token` next (nothing is consumed)."""
        return self.matcher.validate_tokens([token]) == 1

    def consume(self, token: int) -> None:
        """Advance past `token` (a refused token leaves the matcher in its error state: no more masking)."""
        if not self.matcher.is_error():
            self.matcher.consume_token(token)

    def mask(self, logits: Any) -> None:
        """Set the logits of every token the grammar refuses to -inf, in place (any device)."""
        import torch

        if self.matcher.is_error():
            return
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        apply_bitmask(logits, torch.from_numpy(self._bitmask), self.vocab)


def apply_bitmask(logits: Any, bitmask: Any, vocab: int) -> None:
    """`logits[i] = -inf` where bit i of the int32 `bitmask` is 0, and for every id >= `vocab`."""
    import torch

    bits = bitmask.to(logits.device)  # a copy: the host buffer is refilled for the next step
    shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((bits.unsqueeze(-1) >> shifts) & 1).bool().view(-1)
    n = min(vocab, logits.shape[-1])
    logits[:n].masked_fill_(~allowed[:n], float("-inf"))
    if logits.shape[-1] > n:
        logits[n:] = float("-inf")
