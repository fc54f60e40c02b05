# The two commands of the README: `make demo` and `make test`.
# Everything they need is installed from the package registries into .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama-cpp-python ships no Linux wheel: it is compiled once, without AMX (gcc enables it on
# some Xeons and the engine then dies with SIGILL on the first token), into a wheelhouse
# whose name carries the flags, so a wheel built with other flags is never picked up.
LLAMA_VERSION := 0.3.36
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
WHEELHOUSE ?= $(HOME)/.cache/batuta/wheels-llama-$(LLAMA_VERSION)-noamx
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install wheel clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

wheel: $(VENV)/bin/python
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "building llama.cpp engine (first time only, several minutes)"; \
		mkdir -p $(WHEELHOUSE); \
		CFLAGS="$(LLAMA_FLAGS)" CXXFLAGS="$(LLAMA_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PIP) wheel --no-cache-dir --no-deps -w $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION); \
	fi

$(STAMP): pyproject.toml | wheel
	$(PIP) install --quiet --find-links $(WHEELHOUSE) --only-binary llama-cpp-python \
		-e '.[dev,llamacpp,hf,plot]'
	touch $(STAMP)

install: wheel $(STAMP)

lint: install
	$(VENV)/bin/ruff check batuta tests bench
	$(VENV)/bin/ruff format --check batuta tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/coverage erase
	$(VENV)/bin/pytest --cov=batuta --cov-report=term --cov-fail-under=90

test: lint typecheck unit

demo: install
	$(VENV)/bin/batuta validate
	$(VENV)/bin/batuta serve tree
	$(VENV)/bin/batuta plan
	$(VENV)/bin/batuta apply
	$(VENV)/bin/batuta status
	$(VENV)/bin/batuta serve query --no-stream --max-tokens 64 "In one sentence: why is the sky blue?"
	$(VENV)/bin/batuta down
	@echo "demo done: \`.venv/bin/batuta apply\` brings the server back and leaves it running."

clean:
	rm -rf $(VENV) .batuta .pytest_cache .mypy_cache .ruff_cache .coverage*
