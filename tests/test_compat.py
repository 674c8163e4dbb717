"""We call the installed transformers the way it wants, and its warnings never reach a user."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

from kimi_cli.conversation import GenerationSettings, Message, Request
from kimi_cli.model.compat import cache_kwarg


def test_cache_argument_matches_the_installed_signature(tiny_model):
    import inspect

    model = tiny_model.model
    (name,) = cache_kwarg(model, None)
    assert name in inspect.signature(type(model).forward).parameters


def test_a_plain_turn_raises_no_deprecation_warning(tiny_model):
    from kimi_cli.engine.local import LocalEngine

    engine = LocalEngine(tiny_model, mode="plain")
    request = Request(messages=(Message.text("user", "Hi"),),
                      settings=GenerationSettings(max_new_tokens=4, temperature=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        events = list(engine.stream(request))
    assert type(events[-1]).__name__ == "Finished", events[-1]


WARNS = """
import sys, warnings
from kimi_cli.cli import quiet_warnings
quiet_warnings('--debug' in sys.argv)
warnings.warn_explicit('library advice', FutureWarning, 'x.py', 1, module='transformers.models.x')
"""


def test_third_party_warnings_are_hidden_unless_debug():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "KIMI_DEBUG")}
    quiet = subprocess.run([sys.executable, "-c", WARNS], capture_output=True, text=True, env=env, timeout=60)
    loud = subprocess.run([sys.executable, "-c", WARNS, "--debug"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "library advice" in loud.stderr
