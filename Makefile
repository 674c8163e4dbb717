# Set-up and everyday tasks. `make ask` and `make test` each do all the set-up they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned, so that the package's own range (torch<2.14) is already
# met and pip never swaps in a different build (on CPU-only machines, a multi-GB CUDA one).
TORCH  ?= torch==2.13.0
IMAGE  ?= examples/chelsea.png
PROMPT ?= What is in this picture?

.PHONY: install ask test lint clean

$(BIN)/kimi: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	@touch $@

install: $(BIN)/kimi ## create .venv with kimi and its test tools

ask: $(BIN)/kimi ## the main job: ask the model about an example photo
	$(BIN)/kimi ask $(IMAGE) "$(PROMPT)" $(ARGS)

test: $(BIN)/kimi ## lint and run the test suite (CPU only; GPU tests skip)
	$(BIN)/ruff check kimi_cli tests benchmarks
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
