# One-command set-up (idempotent), the tests, and the main job.
PYTHON ?= python3.11
VENV   := .venv
LAVA   := .venv-lava
BIN    := $(VENV)/bin
SANAFE := sanafe==2.2.9

.PHONY: setup test demo clean

setup: $(VENV)/.installed $(VENV)/.sanafe $(LAVA)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# SANA-FE (`simulate --backend sanafe`) goes into its own folder of the venv: its wheel also installs stray top-level
# src/tests/docs/scripts packages, which .ci/install-sanafe deletes there (a stray `tests` could shadow ours).
$(VENV)/.sanafe: $(VENV)/.installed .ci/install-sanafe
	sh .ci/install-sanafe $(VENV) $(SANAFE)
	touch $@

# lava-nc runs only on Python 3.10: the Lava bridge gets its own environment (numpy + lava-nc, no torch).
$(LAVA)/.installed:
	@py=$$(sh .ci/python310); \
	if [ -z "$$py" ]; then echo "note: no Python 3.10 found; the Lava bridge tests will be skipped"; \
	else (test -x $(LAVA)/bin/python || $$py -m venv $(LAVA)) && \
	     $(LAVA)/bin/pip install -q --disable-pip-version-check lava-nc==0.10.0 && touch $@; fi

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/eventllm demo --output out/demo

clean:
	rm -rf $(VENV) $(LAVA) out .pytest_cache
