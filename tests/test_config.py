"""Settings precedence: defaults <- config file <- KIMI_* env vars <- flags."""

from __future__ import annotations

import pytest

from kimi_cli.config import config_path, data_dir, from_env, load_settings, merge_settings
from kimi_cli.errors import EXIT_USAGE, UsageError
from kimi_cli.settings import BY_NAME


@pytest.mark.parametrize(
    ("file_values", "env_values", "flags", "key", "expected"),
    [
        ({}, {}, {}, "temperature", 0.8),
        ({"temperature": 0.5}, {}, {}, "temperature", 0.5),
        ({"temperature": 0.5}, {"temperature": "0.3"}, {}, "temperature", 0.3),
        ({"temperature": 0.5}, {"temperature": "0.3"}, {"temperature": 0.1}, "temperature", 0.1),
        ({"model": "/a"}, {}, {"model": None}, "model", "/a"),
        ({}, {"max_new_tokens": "64"}, {}, "max_new_tokens", 64),
        ({"unknown_key": 1}, {}, {}, "thinking", "collapse"),
    ],
)
def test_precedence(file_values, env_values, flags, key, expected):
    assert getattr(merge_settings(file_values, env_values, flags), key) == expected


def test_env_vars_are_read_with_prefix():
    env = {"KIMI_MODEL": "/models/k", "KIMI_TEMPERATURE": "0", "MODEL": "ignored"}
    assert from_env(env) == {"model": "/models/k", "temperature": 0.0}


def test_bad_number_is_a_usage_error():
    with pytest.raises(UsageError) as err:
        from_env({"KIMI_MAX_NEW_TOKENS": "many"})
    assert err.value.exit_code == EXIT_USAGE
    assert "KIMI_MAX_NEW_TOKENS" in err.value.message


def test_config_file_and_xdg(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path), "KIMI_TOP_P": "0.9"}
    path = config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text('model = "/from/file"\ntemperature = 0.2\n')
    settings = load_settings({"temperature": None}, env)
    assert settings.model == "/from/file"
    assert settings.temperature == 0.2
    assert settings.top_p == 0.9
    assert data_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "kimi"


def test_malformed_config_file_names_the_file(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    path = config_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("model = [unclosed\n")
    with pytest.raises(UsageError) as err:
        load_settings({}, env)
    assert str(path) in err.value.message


def test_defaults_follow_the_model_card():
    assert BY_NAME["temperature"].default == 0.8
    assert BY_NAME["max_new_tokens"].default == 32768
