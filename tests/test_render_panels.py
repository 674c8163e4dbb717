"""The Rich renderer on a fixed 80x24 colourless terminal, replayed through `Screen`."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import pytest
from fakes import CTRL_C, FakeClock, Screen, ScriptedEngine, Step, assert_golden, make_env, reply_events

from kimi_cli.events.types import AnswerDelta, ErrorEvent, Finished, Notice, ThinkingDelta, Timings, Usage
from kimi_cli.render import make_renderer
from kimi_cli.render.base import Outcome, RenderMeta, ThinkingMode, render_stream
from kimi_cli.render.panels import THINKING_TAIL, MarkdownBlocks, PanelsRenderer, footer_text, make_console

W, H = 80, 24
THINKING = (
    "The user wants to know what is in the picture. I can see an animal on a mat, probably a cat: "
    "pointed ears, whiskers, a long tail.\n\nThe mat looks like woven straw. I should describe the cat "
    "first, then the setting, and keep it short."
)
ANSWER = (
    "# A cat on a mat\n\nThe picture shows a **tabby cat** lying on a woven mat.\n\n"
    "- pointed ears\n- long whiskers\n\n```python\nprint('meow')\n\nprint('purr')\n```\n\nThat is all I can see."
)
DONE = dict(usage=Usage(prompt_tokens=1300, image_tokens=1024, generated_tokens=845),
            timings=Timings(first_token_s=0.42), tokens_per_s=31.5)


def render(steps: Sequence[Step], thinking: ThinkingMode = "collapse", width: int = W,
           height: int = H) -> tuple[str, str, Outcome]:
    """Run a script through the renderer; returns (raw output, replayed screen, outcome)."""
    clock = FakeClock()
    out = io.StringIO()
    renderer = PanelsRenderer(make_console(out, terminal=True, color=False, width=width, height=height),
                              thinking, clock=clock)
    engine = ScriptedEngine(steps)
    outcome = render_stream(renderer, RenderMeta("kimi"), clock.ticking(engine.stream(None), 0.05), engine.cancel)
    raw = out.getvalue()
    return raw, Screen(width, height).feed(raw).text(), outcome


def assert_clean(raw: str) -> None:
    """The cursor was hidden for the live area and shown again at the end."""
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l") >= 0


@pytest.mark.parametrize("mode", ["collapse", "show", "hide"])
def test_thinking_then_answer(mode: ThinkingMode) -> None:
    raw, screen, outcome = render(reply_events(THINKING, ANSWER, **DONE), mode)
    assert_golden(f"panels_{mode}.txt", screen)
    assert_clean(raw)
    assert outcome.exit_code == 0
    assert screen.count("╭─ Answer") == 1 and screen.count("That is all I can see.") == 1
    assert ("▸ Thought for" in screen) == (mode == "collapse")
    assert ("woven straw" in screen) == (mode == "show")


def test_answer_taller_than_the_terminal_has_every_line_once() -> None:
    answer = "\n\n".join(f"Paragraph {i:02d} of a long answer." for i in range(60))
    code = "```\n" + "\n".join(f"code line {i:02d}" for i in range(40)) + "\n```"
    raw, screen, _ = render(reply_events("Plan.", answer + "\n\n" + code, **DONE))
    assert_golden("panels_tall.txt", screen)
    lines = screen.splitlines()
    assert len(lines) > 3 * H
    for i in range(60):
        assert sum(f"Paragraph {i:02d} " in line for line in lines) == 1
    for i in range(40):
        assert sum(f"code line {i:02d}" in line for line in lines) == 1


def test_cut_off_mid_thinking() -> None:
    steps = reply_events(THINKING * 3, "", stop_reason="max_tokens", usage=Usage(generated_tokens=64))
    raw, screen, outcome = render(steps)
    assert_golden("panels_cut_off_thinking.txt", screen)
    assert_clean(raw)
    assert "before any answer" in screen and "Answer" not in screen
    assert outcome.exit_code == 0


def test_ctrl_c_mid_answer_keeps_the_partial_answer() -> None:
    steps = reply_events(THINKING, "First paragraph.\n\nSecond paragraph is half wri", finish=False)
    raw, screen, outcome = render([*steps, CTRL_C, AnswerDelta("tten, never shown")])
    assert_golden("panels_ctrl_c.txt", screen)
    assert_clean(raw)
    assert "Second paragraph is half wri" in screen and "never shown" not in screen
    assert "✂ cut off by Ctrl-C" in screen
    assert outcome.interrupted and outcome.exit_code == 130


def test_error_shows_one_red_line_after_the_partial_answer() -> None:
    steps = reply_events("Hmm.", "Partial", finish=False)
    raw, screen, outcome = render([*steps, ErrorEvent("CUDA out of memory", hint="use a smaller image", exit_code=1)])
    assert_clean(raw)
    assert screen.splitlines()[-3:] == ["╰" + "─" * 78 + "╯", "kimi: error: CUDA out of memory",
                                         "hint: use a smaller image"]
    assert outcome.exit_code == 1


def test_live_area_stays_bounded_on_a_small_terminal() -> None:
    # Screen raises if the live area ever outgrows the terminal (the cause of duplicated lines).
    code = "```\n" + "\n".join(f"row {i}" for i in range(50)) + "\n```"
    _, screen, _ = render(reply_events(THINKING * 5, code + "\n\nEnd.", chunk=3), width=40, height=8)
    assert all(screen.count(f"row {i} ") + screen.count(f"row {i}\n") >= 1 for i in range(50))


def test_live_thinking_panel_shows_the_latest_thinking() -> None:
    out = io.StringIO()
    clock = FakeClock()
    renderer = PanelsRenderer(make_console(out, terminal=True, color=False, width=W, height=H), clock=clock)
    for event in reply_events(THINKING * 4, "", finish=False):
        clock.advance(0.2)
        renderer.handle(event)
    lines = Screen(W, H).feed(out.getvalue()).text().splitlines()
    assert lines[0].startswith("╭─ Thinking… ") and lines[-1].startswith("╰")
    assert len(lines) == THINKING_TAIL + 2 and "keep it short." in lines[-2]
    renderer.close()
    assert Screen(W, H).feed(out.getvalue()).text().startswith("▸ Thought for")


def test_thinking_tail_is_bounded() -> None:
    clock = FakeClock()
    renderer = PanelsRenderer(make_console(io.StringIO(), terminal=True, color=False, width=W, height=H),
                              clock=clock)
    renderer.handle(ThinkingDelta("word " * 2000))
    lines = renderer.console.render_lines(renderer._view(), pad=False)
    assert len(lines) == THINKING_TAIL + 2
    renderer.close()


def test_refreshes_are_throttled() -> None:
    clock = FakeClock()
    out = io.StringIO()
    renderer = PanelsRenderer(make_console(out, terminal=True, color=False, width=W, height=H), clock=clock)
    renderer.start(RenderMeta())
    for _ in range(200):
        clock.advance(0.001)  # 200 tokens in 0.2 s
        renderer.handle(ThinkingDelta("x "))
    renderer.close()
    assert out.getvalue().count("Thinking…") <= 5


def test_notices_print_above_the_live_area() -> None:
    steps = reply_events("Hmm.", "Answer.", finish=False)
    _, screen, _ = render([steps[0], Notice("image downscaled to 1024 tokens", "warning"), *steps[1:],
                           Finished("end_turn")])
    assert screen.splitlines()[0] == "kimi: warning: image downscaled to 1024 tokens"


def test_notices_and_errors_go_to_stderr_when_it_is_not_a_terminal() -> None:
    env = make_env(tty=True, stderr_tty=False, no_color=False)
    renderer = make_renderer("auto", "collapse", env)
    steps = [Notice("loading"), Notice("slow", "warning"), ErrorEvent("boom")]
    render_stream(renderer, RenderMeta(), steps, lambda: None)
    assert env.stderr.getvalue() == "kimi: warning: slow\nkimi: error: boom\n"
    assert env.stdout.getvalue() == ""


def test_no_color_terminal_gets_no_escape_codes() -> None:
    env = make_env(tty=True, no_color=True)
    render_stream(make_renderer("auto", "collapse", env), RenderMeta(), reply_events(THINKING, ANSWER, **DONE),
                  lambda: None)
    text = env.stdout.getvalue()
    assert "\x1b" not in text
    assert "▸ Thought for" in text and "That is all I can see." in text


def test_close_without_a_final_event_keeps_the_partial_answer() -> None:
    out = io.StringIO()
    renderer = PanelsRenderer(make_console(out, terminal=True, color=False, width=W, height=H), clock=FakeClock())
    for event in reply_events("Hmm.", "Partial answer", finish=False):
        renderer.handle(event)
    renderer.close()
    renderer.close()
    screen = Screen(W, H).feed(out.getvalue()).text()
    assert screen.count("Partial answer") == 1 and screen.rstrip().endswith("╯")


class _BrokenFile(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError


def test_broken_pipe_ends_quietly() -> None:
    console = make_console(_BrokenFile(), terminal=False, color=False, width=W, height=H)
    renderer = PanelsRenderer(console, clock=FakeClock())
    cancelled = []
    outcome = render_stream(renderer, RenderMeta(), reply_events("a", "b"), lambda: cancelled.append(1))
    assert outcome.output_closed and outcome.exit_code == 0 and cancelled


@pytest.mark.parametrize(
    ("finished", "footer"),
    [
        (Finished("end_turn"), ""),
        (Finished("end_turn", **DONE), "0.42 s to first token · 31.5 tokens/s · 845 tokens · 1,024 image tokens"),
        (Finished("end_turn", Usage(generated_tokens=3)), "3 tokens"),
    ],
)
def test_footer(finished: Finished, footer: str) -> None:
    assert footer_text(finished) == footer


BLOCK_CASES = [
    ("one paragraph", "Hello\nworld", [], "Hello\nworld"),
    ("two paragraphs", "A\n\nB", [], "A\n\nB"),
    ("finished when the next starts", "A\n\nB\n", ["A"], "B"),
    ("several blank lines", "A\n\n\n\nB\n\nC", ["A"], "B\n\nC"),
    ("blank lines inside a fence", "```\na\n\nb\n```\n\nC\n", ["```\na\n\nb\n```"], "C"),
    ("tilde fence, longer closer", "~~~\nx\n\n~~~~\n\nC\n", ["~~~\nx\n\n~~~~"], "C"),
    ("a different fence does not close", "```\nx\n~~~\n\ny\n```\n\nZ\n", ["```\nx\n~~~\n\ny\n```"], "Z"),
    ("indented continuation stays", "- item\n\n  more\n\nNext\n", ["- item\n\n  more"], "Next"),
    ("leading blank lines", "\n\nA\n\nB\n", ["A"], "B"),
]


@pytest.mark.parametrize(("name", "text", "blocks", "current"), BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_markdown_blocks(name: str, text: str, blocks: list[str], current: str) -> None:
    for chunks in ([text], list(text)):
        splitter = MarkdownBlocks()
        done = [block for chunk in chunks for block in splitter.feed(chunk)]
        assert (done, splitter.current) == (blocks, current)


def test_markdown_blocks_flush() -> None:
    splitter = MarkdownBlocks()
    splitter.feed("A\n\nB")
    assert splitter.flush() == "A\n\nB"
    assert splitter.current == "" and splitter.feed("C\n") == []


def test_panel_lines_fit_the_width() -> None:
    _, screen, _ = render(reply_events(THINKING, ANSWER + "\n\n" + "long " * 100, **DONE), width=50)
    widths = {len(line) for line in screen.splitlines() if re.match("[│╭╰]", line)}
    assert widths == {50}


def test_collapsed_line_says_when_the_budget_cut_the_thinking() -> None:
    events = reply_events(THINKING, ANSWER, **DONE)
    cut = [ThinkingDelta(e.text, e.tokens, truncated=True) if isinstance(e, ThinkingDelta) and i > 3 else e
           for i, e in enumerate(events)]
    _, screen, _ = render(cut)
    line = next(row for row in screen.splitlines() if "Thought for" in row)
    assert re.search(r"▸ Thought for [\d.]+ s · \d+ tokens \(budget\)", line), line
    _, screen, _ = render(events)
    assert "(budget)" not in screen
