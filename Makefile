# Set-up and everyday tasks. `make ask` and `make test` each do all the set-up they need.
#
# Installs come from constraints.txt, the versions the suite last passed with (the package itself keeps
# its ranges in pyproject.toml). `make test-latest` tests the newest versions those ranges allow, in a
# venv of its own, so a dependency release that breaks us is found by us; `make lock` rewrites
# constraints.txt from the main venv once `make test` passes there.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   ?= constraints.txt
# torch is installed first and pinned, so that the package's own range (torch<2.14) is already
# met and pip never swaps in a different build (on CPU-only machines, a multi-GB CUDA one).
TORCH  ?= torch==2.13.0
IMAGE  ?= examples/chelsea.png
PROMPT ?= What is in this picture?
LATEST ?= .venv-latest

.PHONY: install ask test quick lint test-latest lock clean

$(BIN)/kimi: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c $(LOCK) --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c $(LOCK) -e ".[test]"
	@touch $@

install: $(BIN)/kimi ## create .venv with kimi and its test tools (locked versions)

ask: $(BIN)/kimi ## the main job: ask the model about an example photo
	$(BIN)/kimi ask $(IMAGE) "$(PROMPT)" $(ARGS)

lint: $(BIN)/kimi
	$(BIN)/ruff check kimi_cli tests benchmarks

test: lint ## lint and run the whole test suite (CPU only; GPU tests skip)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

quick: lint ## the quick subset: everything not marked slow (about 75 s on 2 cores)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-latest: ## the suite on the newest versions pyproject.toml allows (own venv, no lock)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q "$(TORCH)"
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/ruff check kimi_cli tests benchmarks
	$(LATEST)/bin/python -m pytest -q $(PYTEST_ARGS)

lock: $(BIN)/kimi ## rewrite constraints.txt from .venv (run after `make test` passes)
	@{ echo "# Versions the test suite passed with; make and CI install from this file (pip -c)."; \
	   echo "# Regenerate with 'make lock' after 'make test' passes; torch is pinned by TORCH in the Makefile."; \
	   $(BIN)/pip freeze --all --exclude-editable | grep -v -i -E '^(torch|setuptools|wheel)=='; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .ruff_cache
