"""Kimi-VL facts live in one module; whether a checkpoint thinks comes from its files, not its name."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kimi_cli.model import facts
from kimi_cli.model.facts import THINK_CLOSE, THINK_OPEN, checkpoint_thinks, stop_token_ids
from kimi_cli.model.synthetic import CHAT_TEMPLATE, THINKING_CHAT_TEMPLATE

PACKAGE = Path(__file__).resolve().parents[1] / "kimi_cli"
CAT = str(Path(__file__).resolve().parents[1] / "examples" / "chelsea.png")


@pytest.mark.parametrize(("im_end", "eos", "generation", "expected"), [
    (7, 6, None, (7, 6)),
    (7, None, None, (7,)),
    (7, 6, [7, 6], (7, 6)),
    (7, 6, 9, (7, 6, 9)),
    (7, 6, [9, "x", True, -1, 9], (7, 6, 9)),
])
def test_stop_token_ids(im_end, eos, generation, expected) -> None:
    assert stop_token_ids(im_end, eos, generation) == expected


def _ckpt(tmp_path: Path, jinja: str | None = None, tokenizer_template: object = None) -> Path:
    d = tmp_path / "Kimi-VL-A3B-Thinking-2506"  # the name must never decide
    d.mkdir()
    if jinja is not None:
        (d / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    if tokenizer_template is not None:
        (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": tokenizer_template}))
    return d


@pytest.mark.parametrize(("jinja", "tokenizer_template", "thinks"), [
    (THINKING_CHAT_TEMPLATE, None, True),
    (CHAT_TEMPLATE, None, False),
    (None, THINKING_CHAT_TEMPLATE, True),
    (None, CHAT_TEMPLATE, False),
    (None, [{"name": "default", "template": f"x{THINK_OPEN}"}], True),
    (None, [{"name": "default"}, 5], False),
    (None, 5, False),
    (None, None, False),
    (CHAT_TEMPLATE, THINKING_CHAT_TEMPLATE, False),  # the .jinja file wins, as in transformers
])
def test_checkpoint_thinks_from_the_template(tmp_path: Path, jinja, tokenizer_template, thinks) -> None:
    assert checkpoint_thinks(_ckpt(tmp_path, jinja, tokenizer_template)) is thinks


def test_checkpoint_thinks_survives_bad_files(tmp_path: Path) -> None:
    d = _ckpt(tmp_path)
    (d / "chat_template.jinja").write_bytes(b"\xff\xfe")
    (d / "tokenizer_config.json").write_text("{not json")
    assert checkpoint_thinks(d) is False
    assert checkpoint_thinks(tmp_path / "absent") is False


def test_synth_writes_the_template_that_says_it_thinks(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from kimi_cli.model.synthetic import write_checkpoint

    assert checkpoint_thinks(tiny_checkpoint) is False
    thinking = write_checkpoint(tmp_path / "renamed", "tiny", thinking=True)
    assert checkpoint_thinks(thinking) is True
    config = json.loads((thinking / "tokenizer_config.json").read_text())
    assert THINK_CLOSE in config["chat_template"]


def test_thinking_template_drops_earlier_thinking() -> None:
    import jinja2

    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": f"{THINK_OPEN}hmm{THINK_CLOSE}\n\nHello."},
                {"role": "user", "content": "and?"}]
    text = jinja2.Environment().from_string(THINKING_CHAT_TEMPLATE).render(messages=messages,
                                                                           add_generation_prompt=True)
    assert "hmm" not in text and "<|im_middle|>Hello.<|im_end|>" in text


_FACT_STRINGS = {THINK_OPEN, THINK_CLOSE, facts.IM_END, facts.MEDIA_PAD, facts.MEDIA_START, facts.EOS,
                 facts.BOS, facts.GENERATION_PROMPT, facts.DEFAULT_SYSTEM_PROMPT}


def test_facts_are_defined_once() -> None:
    """No other module spells a marker, special token or chat piece as a value of its own."""
    for path in PACKAGE.rglob("*.py"):
        if path.name == "facts.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in _FACT_STRINGS}
        assert not found, f"{path.relative_to(PACKAGE)} spells {found}"


def test_no_name_based_thinking_guess_remains() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert '"thinking" in' not in path.read_text(encoding="utf-8"), path


def _ask_json(model: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KIMI_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-m", "kimi_cli", "ask", CAT, "What is this?", "--model", str(model),
                           "--temperature", "0", "--format", "json", "--max-new-tokens", "48"],
                          capture_output=True, text=True, env=env, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_renamed_thinking_checkpoint_still_splits(thinking_checkpoint: Path) -> None:
    """The tiny-thinking checkpoint copied under a name without "thinking" still thinks."""
    import tempfile

    from kimi_cli.model.fitted import FITTED_ANSWER, FITTED_THINKING

    # Not under tmp_path: pytest names that folder after the test, which says "thinking".
    with tempfile.TemporaryDirectory(prefix="kimi-copy-") as tmp:
        copy = Path(shutil.copytree(thinking_checkpoint, Path(tmp) / "my-local-model"))
        assert "thinking" not in str(copy).lower()
        assert checkpoint_thinks(copy) is True
        result = _ask_json(copy)
    assert (result["thinking"], result["answer"]) == (FITTED_THINKING, FITTED_ANSWER)


@pytest.mark.slow
def test_a_thinking_name_does_not_make_a_model_think(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The random tiny checkpoint (no markers in its template) under a "Thinking" name: text is answer."""
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "Kimi-VL-A3B-Thinking-2506"))
    result = _ask_json(copy)
    assert result["thinking"] == "" and result["answer"]
