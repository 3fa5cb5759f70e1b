# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
DEEPSPEED := deepspeed==0.19.8

.PHONY: install demo lint test bench clean constraints

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

# docker/constraints.txt: every Python package of both images, pinned from a resolved environment (docker/lock.sh).
# TORCH_INDEX=local resolves against this machine's own torch wheel when the CUDA index is out of reach.
constraints:
	bash docker/lock.sh $(TORCH) $(DEEPSPEED)

bench: install
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache
