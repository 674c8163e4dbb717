"""Kimi-VL-A3B-Thinking-2506 facts in one place: thinking markers, special tokens, chat format, stop ids.

Every other module takes these values from here (`kimi_cli.model.prompt`, `.tokenizer`,
`.checkpoint`, `.synthetic`, the engine). Sources and confidence are in the shared facts file
(sections cited below); values marked unverified there are read from the checkpoint's own files at
load time where the checkpoint has them (special-token ids, eos ids), and these are the defaults.

`checkpoint_thinks` decides from a checkpoint's own files whether it writes `◁think▷…◁/think▷`
replies, never from the directory or hub name (a renamed copy is the same model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kimi_cli.events.thinking import ThinkingFormat
from kimi_cli.textsafe import json_loads

# Thinking markers (facts 8): ordinary BPE text, several tokens each, not special tokens.
THINK_OPEN = "◁think▷"
THINK_CLOSE = "◁/think▷"

# Special tokens (facts 7): 256 reserved ids after the BPE vocabulary (163584 in the real model).
BOS, EOS, UNK, PAD = "[BOS]", "[EOS]", "[UNK]", "[PAD]"
IM_END, IM_USER, IM_ASSISTANT = "<|im_end|>", "<|im_user|>", "<|im_assistant|>"
IM_SYSTEM, IM_MIDDLE = "<|im_system|>", "<|im_middle|>"
MEDIA_START = "<|media_start|>"  # K2.5 calls the same id <|media_begin|>; Kimi-VL does not
MEDIA_CONTENT, MEDIA_END, MEDIA_PAD = "<|media_content|>", "<|media_end|>", "<|media_pad|>"
NUM_RESERVED_SPECIAL = 256
FIRST_SPECIAL_ID = 163584
#: Named special tokens as offsets from the first special id.
NAMED_SPECIAL_OFFSETS: dict[str, int] = {
    BOS: 0, EOS: 1, IM_END: 2, IM_USER: 3, IM_ASSISTANT: 4, "<|start_header_id|>": 6,
    "<|end_header_id|>": 7, "[EOT]": 9, IM_SYSTEM: 10, IM_MIDDLE: 17, MEDIA_START: 18,
    MEDIA_CONTENT: 19, MEDIA_END: 20, MEDIA_PAD: 21, UNK: 254, PAD: 255,
}
#: Special tokens without the `<|...|>` shape, which a decoder may leave in text.
BRACKET_SPECIALS = (BOS, EOS, PAD, UNK)

#: How the thinking splitter (`kimi_cli.events.thinking`) recognises Kimi-VL's markers.
THINKING_FORMAT = ThinkingFormat(THINK_OPEN, THINK_CLOSE, BRACKET_SPECIALS)

# Chat format (facts 8): nothing is inserted between the pieces.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"  # no final period, as in the template
ROLE_TOKENS = {"system": IM_SYSTEM, "user": IM_USER, "assistant": IM_ASSISTANT}
GENERATION_PROMPT = f"{IM_ASSISTANT}assistant{IM_MIDDLE}"


def turn_header(role: str) -> str:
    """The template text that opens a turn: `<|im_user|>user<|im_middle|>` and so on."""
    return f"{ROLE_TOKENS[role]}{role}{IM_MIDDLE}"


def image_block(pads: str) -> str:
    """One image in the prompt, around its `<|media_pad|>` run (one pad before expansion)."""
    return f"{MEDIA_START}image{MEDIA_CONTENT}{pads}{MEDIA_END}"


# Stop ids (facts 1.4): `<|im_end|>` ends the turn (what the official demos stop on); `[EOS]` is a
# guard because the hub generation config's eos id is unverified; any eos ids the checkpoint's
# `generation_config.json` lists are added after them.
def stop_token_ids(im_end_id: int, eos_id: int | None = None, generation_eos: Any = None) -> tuple[int, ...]:
    """The ids that end an assistant turn, `<|im_end|>` first, each once."""
    extra = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    ids: list[int] = []
    for i in (im_end_id, eos_id, *extra):
        if isinstance(i, int) and not isinstance(i, bool) and i >= 0 and i not in ids:
            ids.append(i)
    return tuple(ids)


# Whether a checkpoint thinks: from its chat template, the one file in which the copies we have
# (facts 8) can differ between a model that writes `◁think▷…◁/think▷` and one that does not. A
# template that mentions a marker (to strip earlier thinking from the history, as the facts advise
# and the official demo does, or to open a thinking block) belongs to a model that writes them.
# `chat_template.jinja` is read first, then `tokenizer_config.json`'s `chat_template`. Never the
# directory or hub name: a renamed copy is the same model.
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def checkpoint_thinks(path_or_loaded: Path | str | Any) -> bool:
    """Whether the checkpoint replies in the thinking format, decided from its own files.

    Takes a checkpoint directory or anything with a `.path` to one (a `LoadedModel`). A missing or
    unreadable template counts as silent, and silence means False (text is answer unless a reply
    opens with `◁think▷`, which the splitter still honours).
    """
    path = Path(getattr(path_or_loaded, "path", path_or_loaded))
    return any(marker in template for template in _chat_templates(path) for marker in (THINK_OPEN, THINK_CLOSE))


def _chat_templates(path: Path) -> list[str]:
    """The checkpoint's chat template texts: the `.jinja` file, else the tokenizer config's."""
    try:
        return [(path / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")]
    except (OSError, UnicodeDecodeError):
        pass
    template = _json(path / "tokenizer_config.json").get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        return [t["template"] for t in template if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return [template] if isinstance(template, str) else []


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json_loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
