"""`--dry-run` as text: one line per input, one per page or frame, and the totals."""

from __future__ import annotations

from typing import Any

from kimi_cli.textsafe import printable


def plan_lines(plan: Any) -> list[str]:
    """Human-readable lines for a `kimi_cli.plan.Plan` (duck-typed: render/ imports no planner)."""
    lines: list[str] = []
    for item in plan.inputs:
        src = item.source
        # Specs are file names as the user gave them: escape anything that would drive the terminal.
        lines.append(f"{printable(src.spec.text)}: {printable(src.summary)} -> {item.tokens} image tokens")
        for image in item.images:
            geo = image.geometry
            label = f"{printable(image.label)} " if image.label else ""
            lines.append(
                f"  {label}{image.target.size[0]}x{image.target.size[1]} -> {geo.padded[0]}x{geo.padded[1]}, "
                f"grid {geo.grid_hw[0]}x{geo.grid_hw[1]}, {image.tokens} tokens"
            )
    lines.append(
        f"total: {plan.image_tokens} image tokens (budget {plan.max_image_tokens}), "
        f"about {plan.total_tokens} prompt tokens"
    )
    return lines
