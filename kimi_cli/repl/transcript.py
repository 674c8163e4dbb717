"""Conversations as text: the Markdown transcript, the `/stats` table and the resume summary.

Pure functions of a `ChatRecord` (or its turns), so each is tested on values.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kimi_cli.repl.store import ChatRecord, TurnRecord

_CUT = {"cancelled": "cut off by Ctrl-C", "max_tokens": "cut off at the token limit"}


def cut_note(turn: TurnRecord) -> str | None:
    """Why an answer is incomplete, or None when the model finished it."""
    return _CUT.get(turn.stop_reason)


def to_markdown(record: ChatRecord) -> str:
    """The conversation as Markdown: each question, its files, the thinking (folded) and the answer."""
    lines = [f"# kimi chat {record.name}", "", f"Model: `{record.model}`"]
    if record.system is not None:
        lines.append(f"System prompt: {record.system}")
    for n, turn in enumerate(record.turns, 1):
        lines += ["", f"## {n}. You", ""]
        lines += [f"- attached: `{spec}`" for spec in turn.attachments]
        if turn.attachments:
            lines.append("")
        lines += [turn.prompt, "", "### Kimi", ""]
        if turn.thinking.strip():
            lines += ["<details><summary>Thinking</summary>", "", turn.thinking.strip(), "", "</details>", ""]
        lines.append(turn.answer.strip() or "*(no answer)*")
        note = cut_note(turn)
        if note:
            lines += ["", f"*({note})*"]
    return "\n".join(lines) + "\n"


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _rate(turns: Sequence[TurnRecord]) -> float | None:
    """Generated tokens per second of decoding over `turns` (weighted by their tokens)."""
    tokens = seconds = 0.0
    for turn in turns:
        if turn.tokens_per_s:
            tokens += turn.usage.generated_tokens
            seconds += turn.usage.generated_tokens / turn.tokens_per_s
    return tokens / seconds if seconds else None


def _stat_column(turns: Sequence[TurnRecord]) -> list[str]:
    usage = [t.usage for t in turns]
    prompt = sum(u.prompt_tokens for u in usage)
    reused = sum(u.reused_prompt_tokens for u in usage)
    ttfts = [t.timings.first_token_s for t in turns if t.timings.first_token_s is not None]
    rate = _rate(turns)
    share = f" ({reused / prompt:.0%})" if prompt else ""
    return [
        _fmt_int(prompt),
        _fmt_int(prompt - reused),
        _fmt_int(reused) + share,
        _fmt_int(sum(u.image_tokens for u in usage)),
        _fmt_int(sum(u.generated_tokens for u in usage)),
        f"{sum(ttfts) / len(ttfts):.2f} s" if ttfts else "-",
        f"{rate:.1f} tokens/s" if rate else "-",
    ]


_ROWS = ("prompt tokens", "  computed", "  reused from cache", "image tokens", "generated tokens",
         "time to first token", "speed")


def stats_lines(turns: Sequence[TurnRecord]) -> list[str]:
    """The `/stats` table: the last turn and all turns (time to first token: their mean)."""
    if not turns:
        return ["no turns yet"]
    total = f"all {len(turns)} turns" if len(turns) > 1 else "all turns"
    columns = [("last turn", _stat_column(turns[-1:])), (total, _stat_column(turns))]
    label_w = max(len(r) for r in _ROWS)
    widths = [max(len(head), *(len(v) for v in vals)) for head, vals in columns]
    out = [" " * label_w + "".join("  " + head.rjust(w) for (head, _), w in zip(columns, widths, strict=True))]
    for i, row in enumerate(_ROWS):
        cells = "".join("  " + vals[i].rjust(w) for (_, vals), w in zip(columns, widths, strict=True))
        out.append(row.ljust(label_w) + cells)
    return out


def files_lines(turns: Sequence[TurnRecord], pending: Sequence[str]) -> list[str]:
    """`/files`: each attachment with the turn it belongs to, then those waiting for the next message."""
    lines = [f"turn {n}: {spec}" for n, turn in enumerate(turns, 1) for spec in turn.attachments]
    lines += [f"next message: {spec}" for spec in pending]
    return lines or ["no files attached (/attach FILE or @path in a message)"]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def resume_lines(record: ChatRecord, width: int = 100) -> list[str]:
    """What `--continue` prints before the prompt: every earlier turn, one line per side."""
    head = f"resumed chat {record.name}: {len(record.turns)} turn{'s' * (len(record.turns) != 1)}"
    lines = [head]
    for turn in record.turns:
        files = "".join(f" [{os.path.basename(spec)}]" for spec in turn.attachments)
        lines.append("› " + _clip(turn.prompt + files, width - 2))
        note = cut_note(turn)
        suffix = f" ({note})" if note else ""  # kept whole: the answer is what gets shortened
        lines.append("  " + _clip(turn.answer or "(no answer)", max(10, width - 2 - len(suffix))) + suffix)
    return lines
