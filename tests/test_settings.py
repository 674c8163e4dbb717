"""Settings declared once: every source checked the same way, errors naming the source, before any load.

The bad-value table is issue 9 section 3, case by case: each one exits 2 with one `kimi: error:`
line (and a hint) and never reaches the model loader.
"""

from __future__ import annotations

import io

import pytest

from kimi_cli.app.engines import BACKENDS
from kimi_cli.cli import main
from kimi_cli.config import load_settings, resolve, unknown_key_notes
from kimi_cli.errors import EXIT_USAGE, UsageError
from kimi_cli.repl.commands import parse_setting
from kimi_cli.settings import BY_NAME, SETTINGS, Settings, saved, settable


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_load(monkeypatch, tmp_path):
    """A clean environment, and a model loader that fails the test if anything reaches it."""
    import kimi_cli.model.checkpoint as checkpoint

    for s in SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    monkeypatch.delenv("KIMI_ENGINE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(checkpoint, "load_model", refuse)
    monkeypatch.setattr("sys.stdin", Tty())
    return tmp_path


def run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def _image(tmp_path) -> str:
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.new("RGB", (64, 48), "red").save(path)
    return str(path)


@pytest.mark.parametrize(("flags", "env", "config", "message"), [
    ((), {"KIMI_MAX_NEW_TOKENS": "0"}, None, "KIMI_MAX_NEW_TOKENS=0: out of range: must be at least 1"),
    ((), {"KIMI_MAX_NEW_TOKENS": "-1"}, None, "KIMI_MAX_NEW_TOKENS=-1: out of range"),
    ((), {"KIMI_TOP_P": "2"}, None, "KIMI_TOP_P=2: out of range"),
    ((), {"KIMI_TEMPERATURE": "-1"}, None, "KIMI_TEMPERATURE=-1: out of range"),
    ((), {"KIMI_TEMPERATURE": "nan"}, None, "KIMI_TEMPERATURE=nan: out of range"),
    ((), {"KIMI_THINKING": "bogus"}, None, "KIMI_THINKING=bogus: unknown value"),
    ((), {}, "model = 5\n", "config.toml: model = 5: must be text"),
    ((), {}, "temperature = -3\n", "config.toml: temperature = -3: out of range"),
    (("--dtype", "int8"), {}, None, "--dtype int8: unknown value"),
    (("--dtype", "bogus"), {}, None, "--dtype bogus: unknown value"),
    (("--device", "tpu"), {}, None, "--device tpu: unknown device"),
    (("--decoder", "fast", "--device", "cpu"), {}, None, "--decoder fast needs a CUDA GPU"),
    (("--attention", "eager"), {}, None, "--attention eager: unknown value"),
    (("--seed", "99999999999999999999999"), {}, None, "--seed 99999999999999999999999: out of range"),
    (("--max-new-tokens", "many"), {}, None, "--max-new-tokens many: not an integer"),
    (("--max-new-tokens", "1000000000000"), {}, None, "exceed the model's context of 131072 tokens"),
    (("--backend", "vllm"), {}, None, "--backend vllm: unknown value"),
])
def test_bad_settings_are_usage_errors_before_loading(no_load, capsys, monkeypatch, flags, env, config, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if config is not None:
        (no_load / "config" / "kimi").mkdir(parents=True)
        (no_load / "config" / "kimi" / "config.toml").write_text(config)
    code, err = run(["ask", _image(no_load), "What is it?", *flags], capsys)
    assert code == EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("kimi: error: ") and message in lines[0], err
    assert len(lines) == 2 and lines[1].startswith("hint: "), err


def test_machine_dependent_choices_fail_before_loading(no_load, capsys):
    import torch

    if not torch.cuda.is_available():
        code, err = run(["ask", _image(no_load), "x", "--decoder", "fast"], capsys)
        assert code == EXIT_USAGE and "--decoder fast needs a CUDA GPU with Triton" in err
        code, err = run(["ask", _image(no_load), "x", "--device", "cuda:0"], capsys)
        assert code == EXIT_USAGE and "--device cuda:0: no CUDA GPU is visible" in err
    if not torch.backends.mps.is_available():
        code, err = run(["ask", _image(no_load), "x", "--device", "mps"], capsys)
        assert code == EXIT_USAGE and "--device mps: this PyTorch build has no usable MPS" in err


def test_a_long_prompt_on_stdin_is_refused_before_loading(no_load, capsys, monkeypatch):
    text = no_load / "long.txt"
    text.write_bytes(b"word " * 400_000)
    for extra in ((), ("--dry-run",)):
        monkeypatch.setattr("sys.stdin", open(text, encoding="utf-8"))  # noqa: SIM115 - closed by the test's end
        code, err = run(["ask", _image(no_load), "Summarise", *extra], capsys)
        assert code == EXIT_USAGE, err
        assert "more than the model's context of 131072 tokens" in err and "stdin gave 2000000 characters" in err


def test_context_comes_from_the_checkpoint(no_load, capsys, tiny_checkpoint):
    code, err = run(["ask", "hi", "--model", str(tiny_checkpoint), "--max-new-tokens", "20000", "--dry-run"], capsys)
    assert code == EXIT_USAGE and "context of 16384 tokens" in err and "use at most" in err


def test_the_default_budget_is_lowered_to_fit():
    from kimi_cli.app.preflight import fit_budget

    settings = resolve()
    fitted, note = fit_budget(settings, 130_000, 131072)
    assert fitted.max_new_tokens == 1072 and "lowered from 32768 to 1072" in note
    fitted, note = fit_budget(settings, 100, 16384)
    assert fitted.max_new_tokens == 16284 and note is None  # plenty left: no note


def test_saved_session_values_name_the_session():
    with pytest.raises(UsageError) as info:
        load_settings({}, env={}, saved={"temperature": -3}, session="notes")
    assert info.value.message.startswith("session notes: temperature -3: out of range")


def test_a_bad_saved_session_stops_chat_before_loading(no_load, capsys):
    from kimi_cli.repl.launch import ChatInputs, run_chat
    from kimi_cli.repl.store import ChatRecord, SessionStore, TurnRecord

    SessionStore(no_load / "data" / "kimi" / "sessions").save(
        ChatRecord("bad", "m", settings={"temperature": -3}, turns=[TurnRecord("hi")]))
    with pytest.raises(UsageError, match="session bad: temperature -3: out of range"):
        run_chat(ChatInputs(session="bad"), {}, stdin=Tty())


def test_precedence_flags_over_session_over_env_over_file(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "KIMI_TOP_P": "0.5", "KIMI_TEMPERATURE": "0.4"}
    (tmp_path / "kimi").mkdir()
    (tmp_path / "kimi" / "config.toml").write_text("top_p = 0.9\ntemperature = 0.3\nthinking = 'show'\n")
    settings = load_settings({"temperature": "0.1"}, env, saved={"top_p": 0.7}, session="s")
    assert (settings.temperature, settings.top_p, settings.thinking) == (0.1, 0.7, "show")
    assert settings.origins["temperature"] == "--temperature 0.1" and not settings.explicit("seed")


def test_misspelt_config_key_warns(no_load, capsys):
    (no_load / "config" / "kimi").mkdir(parents=True)
    (no_load / "config" / "kimi" / "config.toml").write_text("modle = 'x'\n")
    code, err = run(["ask", "hi", "--dry-run"], capsys)
    assert code == 0
    assert "kimi: warning: config.toml: unknown key 'modle' (did you mean 'model'?)" in err
    assert unknown_key_notes(["zzz"], "config.toml") == ("config.toml: unknown key 'zzz'",)


@pytest.mark.parametrize(("source", "note"), [
    ({"flags": ["--engine", "plain"]}, "--engine is deprecated; use --decoder"),
    ({"env": {"KIMI_ENGINE": "plain"}}, "KIMI_ENGINE is deprecated; use KIMI_DECODER"),
])
def test_engine_is_a_deprecated_alias_of_decoder(no_load, capsys, monkeypatch, source, note):
    for key, value in source.get("env", {}).items():
        monkeypatch.setenv(key, value)
    code, err = run(["ask", "hi", "--dry-run", *source.get("flags", [])], capsys)
    assert code == 0 and f"kimi: warning: {note}" in err
    settings = load_settings({"engine": "plain"}, env={})
    assert settings.decoder == "plain"


def test_every_setting_has_its_flag_env_var_and_config_key():
    import typer.main

    from kimi_cli.cli.app import app

    command = typer.main.get_command(app)
    for name in ("ask", "chat"):
        opts = {o for p in command.commands[name].params for o in p.opts}
        for s in SETTINGS:
            if name in s.commands:
                assert s.flag in opts, (name, s.name)
    for s in SETTINGS:
        raw = "1" if s.kind is bool else (s.choices[-1] if s.choices else str(s.default or 1))
        assert getattr(resolve(({s.config_key: raw}, lambda *a: "file")), s.name) is not None
        assert s.env == "KIMI_" + s.name.upper()
    assert set(Settings.__dataclass_fields__) >= set(BY_NAME)


def test_set_accepts_exactly_the_settable_settings():
    assert [s.name for s in settable()] == ["max_new_tokens", "temperature", "top_p", "thinking", "think_budget"]
    for s in SETTINGS:
        value = s.choices[0] if s.choices else "1"
        if s.settable:
            assert parse_setting(s.key, value)[0] == s.name
        else:
            with pytest.raises(UsageError, match="unknown setting"):
                parse_setting(s.name, value)
    assert {s.name for s in saved()} == {s.name for s in settable()}


def test_backend_choices_are_the_registered_backends():
    assert set(BY_NAME["backend"].choices) == set(BACKENDS)


def test_chat_refuses_an_explicit_budget_beyond_the_context(no_load, tiny_checkpoint):
    from kimi_cli.repl.launch import ChatInputs, run_chat

    with pytest.raises(UsageError, match="exceed the model's context of 16384 tokens"):
        run_chat(ChatInputs(), {"model": str(tiny_checkpoint), "max_new_tokens": "20000"}, stdin=Tty())


def test_think_budget_is_set_saved_and_unset():
    assert parse_setting("think_budget", "512")[0] == "think_budget"
    settings = Settings().with_values("/set", think_budget="512")
    assert settings.think_budget == 512 and settings.saved_values()["think_budget"] == 512
    assert Settings().with_values("/set", think_budget=512).with_values("/set", think_budget="off").think_budget is None
    with pytest.raises(UsageError, match="out of range"):
        Settings().with_values("/set", think_budget="-1")
