"""Tokenizer files for synthetic checkpoints: a small real byte-level BPE in the official layout.

The synthetic checkpoint should tokenize like the real one: words split into several tokens, CJK
characters whose UTF-8 bytes straddle tokens, `◁think▷` spread over several tokens, and the 256
special ids right after the base vocabulary. So instead of a toy word list we train a genuine BPE
(256 single bytes + merges) on `TINY_CORPUS`, pre-split with Kimi's own regex, and write it as
`tiktoken.model` + `tokenizer_config.json` exactly as the hub checkpoint ships them.
"""

from __future__ import annotations

import base64
import heapq
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from kimi_cli.model.facts import BOS, EOS, PAD, UNK
from kimi_cli.model.tokenizer import TIKTOKEN_FILE, TOKENIZER_CONFIG_FILE, default_added_tokens

#: Mixed-script text the tiny preset learns its merges from: chat-style English, Chinese and
#: Japanese, code, numbers, emoji and thinking markers, like what the model reads and writes.
TINY_CORPUS = """\
◁think▷The user wants to know what is in the picture. I see a cat sitting on a wooden table next to a
cup of coffee. The cat's fur is orange with white stripes, and it looks relaxed. Let me check the
details again: there's a window behind it, and sunlight is coming in from the left side.◁/think▷
The image shows an orange tabby cat resting on a wooden table beside a cup of coffee.

◁think▷The question asks for the total. 12 + 30 = 42, and 42 * 3 = 126. I'll double-check: 126 / 3 = 42.
So the answer is 126. Don't forget the units: the price is in dollars, so $126.00.◁/think▷
The total is **$126.00**.

User: Can you read the text in this screenshot? It says "Settings > Privacy > Camera Access".
Assistant: Sure. The screenshot shows the macOS System Settings window, with the Privacy tab open
and the Camera Access toggle turned ON. I'LL walk you through it step by step.

◁think▷用户问的是这张图片里有什么。我看到一只小猫坐在窗台上，外面在下雨。需要描述颜色和动作。◁/think▷
这张图片显示一只灰色的小猫坐在窗台上，正在看着窗外的雨。它的眼睛是绿色的，看起来很安静。
我们今天去公园散步，天气很好，阳光明媚。请问这个文档的第三页讲的是什么内容？
图表显示，二〇二四年的销售额比去年增长了百分之十五。数学题：三角形的面积等于底乘以高除以二。

◁think▷この画像には何が写っていますか。桜の木の下で犬が遊んでいるようです。◁/think▷
この写真には、満開の桜の木の下で遊んでいる白い犬が写っています。とてもかわいいですね。
東京タワーは赤と白の塔です。カタカナとひらがなを混ぜて書きます。ありがとうございました。

def parse_page_range(spec: str, num_pages: int) -> list[int]:
    \"\"\"Return zero-based page indices for a spec like '1-3,7'.\"\"\"
    pages: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            start, end = (int(x) for x in part.split("-"))
            pages.extend(range(start - 1, min(end, num_pages)))
        else:
            pages.append(int(part) - 1)
    return pages

class ImageProcessor:
    def __init__(self, patch_size=14, merge_kernel_size=(2, 2), in_token_limit=16384):
        self.patch_size = patch_size
        self.mergeKernelSize = merge_kernel_size
        self.inTokenLimit = in_token_limit

    def getNumTokens(self, height: int, width: int) -> int:
        return (height // 28) * (width // 28)

for (let i = 0; i < items.length; i++) { console.log(`item ${i}: ${items[i].name}`); }
if err != nil { return fmt.Errorf("load config: %w", err) }
SELECT name, COUNT(*) FROM users WHERE created_at >= '2025-06-21' GROUP BY name;

Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 1234567 3.14159 2.718 1e-5 800000 163840 0x1F600.
Dates and times: 2025-06-21 12:30:45, version 2.5.1, HTTP/1.1 200 OK, 4096x4096 pixels.
CamelCase words: HelloWorld, JavaScript, TypeScript, GitHub, iPhone, OpenAI, MoonViT, DeepSeekV3.
Contractions: don't, can't, won't, it's, we're, they've, I'm, you'd, she'll, DON'T, IT'S, WE'RE.

Emoji: 😀 😂 🎉 👍 🐱 🌸 ☕ 🚀 ❤️ 👨‍👩‍👧 🇯🇵 — great job! ✅ Done. ⚠️ Warning: low memory.
Symbols and punctuation: ... -- ==> <= >= != && || (a, b) [x] {y} @user #tag 100% ~/path/to/file.
Mixed: 我用Python写了一个script来处理PDF文件, 大约 3 分钟 done. 日本語とEnglishのmixed文章です。
\tTabs\tand  multiple   spaces,
  leading spaces, trailing spaces   \r\nWindows line ending.\n\n\nSeveral blank lines above.

The quick brown fox jumps over the lazy dog. A picture is worth a thousand words, and a chart
is worth a thousand numbers. The model reasons step by step before it answers the question.
"""


def train_tiny_bpe(corpus: str, vocab_size: int) -> dict[bytes, int]:
    """Learn a byte-level BPE on `corpus`: ranks 0..255 are single bytes, then merges by frequency.

    Pieces come from Kimi's pre-tokenizer regex, so no token crosses a piece boundary, as in the
    real vocabulary. The most frequent pair merges first (ties break on the pair's bytes, so the
    result is deterministic); pairs seen once merge last. If the corpus runs out of pairs before
    `vocab_size`, `pad_ranks` fills the rest, so the result always has exactly `vocab_size` tokens.
    """
    import regex  # V1 mode: the pattern uses nested classes with `&&`, which V0 misreads

    from kimi_cli.model.tokenizer import KIMI_PAT_STR

    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (one token per byte), got {vocab_size}")
    pieces = Counter(regex.compile(KIMI_PAT_STR, flags=regex.V1).findall(corpus))
    words = [[bytes([b]) for b in piece.encode("utf-8")] for piece in pieces]
    freqs = list(pieces.values())
    ranks = {bytes([b]): b for b in range(256)}
    pair_counts: Counter[tuple[bytes, bytes]] = Counter()
    where: defaultdict[tuple[bytes, bytes], set[int]] = defaultdict(set)
    for index, word in enumerate(words):
        _count_pairs(word, freqs[index], index, pair_counts, where)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while len(ranks) < vocab_size and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg_count:
            continue  # stale heap entry: the count changed after it was pushed
        if neg_count == 0:
            break  # every piece of the corpus is a single token now
        ranks.setdefault(pair[0] + pair[1], len(ranks))
        changed: set[tuple[bytes, bytes]] = set()
        for index in sorted(where.pop(pair)):
            changed |= _count_pairs(words[index], -freqs[index], index, pair_counts, where)
            words[index] = _merge(words[index], pair)
            changed |= _count_pairs(words[index], freqs[index], index, pair_counts, where)
        pair_counts.pop(pair, None)
        for other in sorted(changed - {pair}):
            heapq.heappush(heap, (-pair_counts[other], other))
    return pad_ranks(ranks, vocab_size)


def _count_pairs(
    word: list[bytes],
    weight: int,
    index: int,
    pair_counts: Counter[tuple[bytes, bytes]],
    where: defaultdict[tuple[bytes, bytes], set[int]],
) -> set[tuple[bytes, bytes]]:
    """Add `weight` for every adjacent pair of `word`; return the pairs touched."""
    pairs = list(zip(word, word[1:], strict=False))
    for pair in pairs:
        pair_counts[pair] += weight
        if weight > 0:
            where[pair].add(index)
    return set(pairs)


def _merge(word: list[bytes], pair: tuple[bytes, bytes]) -> list[bytes]:
    """Replace each non-overlapping occurrence of `pair` in `word`, left to right."""
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def pad_ranks(ranks: dict[bytes, int], target_size: int, seed: int = 0) -> dict[bytes, int]:
    """Extend `ranks` to exactly `target_size` tokens with extra unique random multi-byte tokens.

    Used for the full-size preset, whose embedding table must have the real vocabulary size. The
    extra tokens take the highest ranks, so they only win merges the trained tokens leave open.
    """
    if target_size < len(ranks):
        raise ValueError(f"cannot pad {len(ranks)} ranks down to {target_size}")
    rng = random.Random(seed)
    out = dict(ranks)
    while len(out) < target_size:
        token = rng.randbytes(rng.randint(2, 8))
        if token not in out:
            out[token] = len(out)
    return out


def tokenizer_config(first_special_id: int, chat_template: str | None = None) -> dict[str, Any]:
    """The `tokenizer_config.json` content in the official layout for a vocabulary of this size."""
    added = default_added_tokens(first_special_id)
    config: dict[str, Any] = {
        "added_tokens_decoder": {
            str(token_id): {
                "content": name,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for token_id, name in added.items()
        },
        "additional_special_tokens": [
            name for name in added.values() if name.startswith("<|") and "reserved" not in name
        ],
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "clean_up_tokenization_spaces": False,
        # Unverified against the hub file; nothing in kimi reads it (the engine has its own limits).
        "model_max_length": 131072,
        "tokenizer_class": "TikTokenTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_moonshot.TikTokenTokenizer", None]},
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def write_tokenizer_files(out_dir: Path, ranks: dict[bytes, int], chat_template: str | None = None) -> int:
    """Write `tiktoken.model` and `tokenizer_config.json` into `out_dir`; return the first special id."""
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("ranks must be 0..N-1, each used once")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{base64.b64encode(token).decode('ascii')} {rank}\n"
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    (out_dir / TIKTOKEN_FILE).write_text("".join(lines), encoding="ascii")
    first_special_id = len(ranks)
    config = tokenizer_config(first_special_id, chat_template)
    (out_dir / TOKENIZER_CONFIG_FILE).write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return first_special_id
