# One-command set-up (idempotent), the tests, and the main job.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data

.PHONY: setup test demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/eventllm info --model zoo:rwkv4-tiny
	$(BIN)/eventllm evaluate --model zoo:rwkv4-tiny --data $(DATA)/gutenberg --split valid --json out/evaluate.json

clean:
	rm -rf $(VENV) out .pytest_cache
