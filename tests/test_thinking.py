"""The thinking/answer splitter: table-driven over every split point of every reply."""

from __future__ import annotations

import pytest

from kimi_cli.events.thinking import ThinkingFormat, ThinkingSplitter, split_text
from kimi_cli.events.types import AnswerDelta, ThinkingDelta
from kimi_cli.model.facts import THINK_CLOSE, THINK_OPEN, THINKING_FORMAT

O, C = THINK_OPEN, THINK_CLOSE  # noqa: E741 - short names keep the table readable

# (name, reply, implicit_thinking, expected thinking, expected answer)
CASES = [
    ("plain", f"{O}I should look.{C}It is a cat.", True, "I should look.", "It is a cat."),
    ("blank lines around markers", f"{O}\nStep one.\n\nStep two.\n{C}\n\nThe answer.\n", True,
     "Step one.\n\nStep two.", "The answer."),
    ("no opening marker", f"Reasoning here.{C}Answer.", True, "Reasoning here.", "Answer."),
    ("cut off before the close", f"{O}Still thinking about", True, "Still thinking about", ""),
    ("blank text before the opener", f"  \n{O}x{C}y", True, "x", "y"),
    ("text before the opener", f"Sure.{O}x{C}y", True, "Sure.\n\nx", "y"),
    ("stray special tokens", f"<|im_assistant|>{O}a<|im_end|>b{C}c[EOS]", True, "ab", "c"),
    ("im_end at the end", f"{O}a{C}b<|im_end|>", True, "a", "b"),
    ("no markers, thinking model", "Just text.", True, "Just text.", ""),
    ("no markers, instruct model", "Just text.", False, "", "Just text."),
    ("instruct model that thinks", f"{O}a{C}b", False, "a", "b"),
    ("empty thinking", f"{O}{C}Answer", True, "", "Answer"),
    ("markers inside the answer are dropped", f"{O}a{C}b {O}c{C}", True, "a", "b c"),
    ("close cut off by the token limit", f"{O}a{C[:4]}", True, "a", ""),
    ("lone < at the end is text", f"{O}a{C}x <", True, "a", "x <"),
    ("lookalikes stay", f"{O}a ◁ b{C}c < d [E] e <|f g", True, "a ◁ b", "c < d [E] e <|f g"),
    ("inner whitespace kept", f"{O}a\n\n\nb{C}x\n  y", True, "a\n\n\nb", "x\n  y"),
    ("non-latin text", f"{O}思考中…{C}答えは猫です。", True, "思考中…", "答えは猫です。"),
    ("close without any thinking", f"{C}Only an answer.", True, "", "Only an answer."),
]
IDS = [case[0] for case in CASES]


def run(chunks: list[str], implicit: bool = True) -> tuple[str, str, ThinkingSplitter]:
    splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=implicit)
    deltas = [d for chunk in chunks for d in splitter.feed(chunk)] + splitter.finish()
    thinking = "".join(d.text for d in deltas if isinstance(d, ThinkingDelta))
    answer = "".join(d.text for d in deltas if isinstance(d, AnswerDelta))
    return thinking, answer, splitter


@pytest.mark.parametrize(("name", "reply", "implicit", "thinking", "answer"), CASES, ids=IDS)
def test_whole_reply(name: str, reply: str, implicit: bool, thinking: str, answer: str) -> None:
    assert split_text(reply, THINKING_FORMAT, implicit) == (thinking, answer)


@pytest.mark.parametrize(("name", "reply", "implicit", "thinking", "answer"), CASES, ids=IDS)
def test_every_split_into_two_chunks(name: str, reply: str, implicit: bool, thinking: str, answer: str) -> None:
    for i in range(len(reply) + 1):
        got = run([reply[:i], reply[i:]], implicit)[:2]
        assert got == (thinking, answer), f"split at {i}: {reply[:i]!r} | {reply[i:]!r}"


@pytest.mark.parametrize(("name", "reply", "implicit", "thinking", "answer"), CASES, ids=IDS)
def test_every_split_into_three_chunks(name: str, reply: str, implicit: bool, thinking: str, answer: str) -> None:
    n = len(reply)
    for i in range(n + 1):
        for j in range(i, n + 1):
            got = run([reply[:i], reply[i:j], reply[j:]], implicit)[:2]
            assert got == (thinking, answer), f"splits at {i}, {j}"


@pytest.mark.parametrize(("name", "reply", "implicit", "thinking", "answer"), CASES, ids=IDS)
def test_char_by_char(name: str, reply: str, implicit: bool, thinking: str, answer: str) -> None:
    assert run(list(reply), implicit)[:2] == (thinking, answer)


def test_markers_are_never_emitted_partially() -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT)
    seen = []
    for char in f"{O}ab{C}cd":
        seen += [d.text for d in splitter.feed(char)]
    assert not any("◁" in text or "▷" in text for text in seen)


def test_answer_streams_without_waiting_for_the_end() -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT)
    splitter.feed(f"{O}think{C}")
    assert splitter.feed("Hello") == [AnswerDelta("Hello")]
    # Trailing whitespace waits for the next word, so the answer never ends in blank lines.
    assert splitter.feed(" \n") == []
    assert splitter.feed("world") == [AnswerDelta(" \nworld")]


@pytest.mark.parametrize(
    ("chunks", "phase", "saw_open", "saw_close"),
    [
        ([], "start", False, False),
        (["  "], "start", False, False),
        ([O[:3]], "start", False, False),
        ([O], "thinking", True, False),
        ([O, "abc"], "thinking", True, False),
        (["abc"], "thinking", False, False),
        ([O, "a", C], "answer", True, True),
        (["a", C, "b"], "answer", False, True),
    ],
)
def test_state(chunks: list[str], phase: str, saw_open: bool, saw_close: bool) -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT)
    for chunk in chunks:
        splitter.feed(chunk)
    assert (splitter.phase, splitter.saw_open, splitter.saw_close) == (phase, saw_open, saw_close)
    assert splitter.had_markers == (saw_open or saw_close)
    assert splitter.in_thinking == (phase != "answer")


def test_instruct_model_is_not_thinking_at_start() -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=False)
    assert not splitter.in_thinking
    assert splitter.feed("Hi") == [AnswerDelta("Hi")]
    assert not splitter.had_markers


@pytest.mark.parametrize(("name", "reply", "implicit", "thinking", "answer"), CASES, ids=IDS)
def test_thinking_tokens_ride_on_thinking_deltas(name: str, reply: str, implicit: bool, thinking: str,
                                                 answer: str) -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT, implicit_thinking=implicit)
    deltas = [d for char in reply for d in splitter.feed(char, tokens=1)] + splitter.finish()
    carried = sum(d.tokens for d in deltas if isinstance(d, ThinkingDelta))
    assert carried == splitter.thinking_tokens


def test_thinking_tokens_include_the_markers() -> None:
    reply = f"{O}I should look.{C}It is a cat."
    splitter = ThinkingSplitter(THINKING_FORMAT)
    for char in reply:
        splitter.feed(char, tokens=1)
    assert splitter.thinking_tokens == reply.index(C) + len(C)


def test_thinking_tokens_are_known_at_the_switch() -> None:
    splitter = ThinkingSplitter(THINKING_FORMAT)
    splitter.feed(O, tokens=3)
    splitter.feed("hmm", tokens=1)
    splitter.feed(" ", tokens=1)  # held back: trailing whitespace
    out = splitter.feed(C, tokens=4)
    assert out == [ThinkingDelta("", 5)]
    assert splitter.thinking_tokens == 9


@pytest.mark.parametrize(("reply", "thinking", "answer"), [
    ("<think>plan</think>done", "plan", "done"),
    ("<thi", "", ""),
    ("intro <think>a</think>b [X] c", "intro a", "b  c"),
])
def test_markers_come_from_the_format(reply: str, thinking: str, answer: str) -> None:
    """The splitter holds no model's markers: another format splits on its own, chunk by chunk."""
    fmt = ThinkingFormat("<think>", "</think>", ("[X]",))
    assert split_text(reply, fmt) == (thinking, answer)
    for i in range(len(reply) + 1):
        splitter = ThinkingSplitter(fmt)
        deltas = splitter.feed(reply[:i]) + splitter.feed(reply[i:]) + splitter.finish()
        got = ("".join(d.text for d in deltas if isinstance(d, ThinkingDelta)),
               "".join(d.text for d in deltas if isinstance(d, AnswerDelta)))
        assert got == (thinking, answer), i


def test_events_hold_no_kimi_markers() -> None:
    """The Kimi-VL markers live in model/facts.py; events/ only splits on what it is given."""
    import ast
    from pathlib import Path

    import kimi_cli.events.thinking as mod

    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(n)}
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]
    assert not [s for s in strings if any(m in s for m in (THINK_OPEN, THINK_CLOSE, "[EOS]", "[BOS]"))]
