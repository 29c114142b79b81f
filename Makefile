# twinsearch: the two set-up commands are `make demo` and `make test`.
# Both create the environment in .venv when it is missing (or when pyproject.toml changed).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU build of torch, installed before the project so that the torch requirement is already met
# (a bare `torch` requirement would otherwise pull a multi-GB CUDA build).
TORCH_PIN := torch==2.13.0

.PHONY: env test lint demo proto bench clean-env wheel

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[server,dev,ray]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/twinsearch demo

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
		proto/twinsearch/v1/twinsearch.proto

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[server,dev,ray,bench]"
	$(PY) -m bench.run

wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean-env:
	rm -rf $(VENV)
