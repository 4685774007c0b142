# Gondola: two commands on a fresh clone.
#   make demo   simulated stores -> gateways -> lake -> warehouse -> dashboard
#   make test   the whole test suite
# Both build .venv from nothing when it is missing or pyproject.toml changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo
DEMO_ARGS ?=
TEST_ARGS ?=

.PHONY: demo test test-unit test-integration test-e2e bench install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the dependencies into $(VENV) (a few minutes the first time; pip is quiet meanwhile)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gondola demo --out $(OUT) $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(TEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(TEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration $(TEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e $(TEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) out .pytest_cache
