# FaceLink: `make demo` runs the main job, `make test` runs the tests (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup models demo test lint bench arm64-check py310-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py device/_int8dot.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

models: setup
	$(BIN)/facelink models > /dev/null

demo: models
	$(BIN)/python tools/demo.py

test: models
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

bench: models
	$(BIN)/python tools/bench_engine.py
	$(BIN)/python tools/bench_enroll.py
	$(BIN)/python tools/bench_search.py
	$(BIN)/python tools/bench_search_users.py
	$(BIN)/python tools/bench_device.py
	$(BIN)/python tools/bench_startup.py
	$(BIN)/python tools/bench_drain.py

# FaceLink on arm64 under qemu (needs root and network; see README, Performance)
arm64-check: models
	HOST_PY=$(abspath $(BIN)/python) tools/arm64_check.sh

# `facelink serve` with the server on Python 3.10, README's floor (see README, Testing)
py310-check: models
	tools/py310_check.sh

clean:
	rm -rf var/demo
