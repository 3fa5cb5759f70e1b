# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
DEEPSPEED := deepspeed==0.19.8

.PHONY: install demo lint test bench clean

install: $(VENV)/.installed

# torch first and pinned (a CPU wheel is on these machines; a range would pull CUDA packages);
# DeepSpeed's setup imports torch, so it builds against the torch already in the venv.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel packaging
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-build-isolation $(DEEPSPEED)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

demo: install
	PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh

# ruff (lint and format check, configured in pyproject.toml) runs before the tests, so CI enforces it.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache
